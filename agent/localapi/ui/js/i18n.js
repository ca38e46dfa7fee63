// SPDX-License-Identifier: Apache-2.0
// Every string the kiosk screen shows, in Chinese and English, in one place.
// Tests select buttons by these texts: rename one only together with tests/ui.
// The STRINGS literal is strict JSON (tests/ui/test_ui_static.py parses it).

export const LANGUAGES = ["zh", "en"];

export const STRINGS = {
  "app.title": {"zh": "政务自助服务", "en": "Government self-service"},
  "lang.switch": {"zh": "English", "en": "中文"},
  "elder.toggle": {"zh": "大字模式", "en": "Large text"},
  "elder.on": {"zh": "大字模式已开启", "en": "Large text is on"},
  "elder.off": {"zh": "大字模式已关闭", "en": "Large text is off"},

  "home.heading": {"zh": "请选择要办理的业务", "en": "Choose a service"},
  "home.unavailable": {"zh": "暂不可用：{reason}", "en": "Unavailable: {reason}"},
  "home.none": {"zh": "目前没有可办理的业务", "en": "No service is available right now"},
  "home.starting": {"zh": "正在开始办理，请稍候…", "en": "Starting, please wait…"},

  "reason.offline": {"zh": "需要联网，网络已中断", "en": "Needs the network, which is down"},
  "reason.printer_out_of_paper": {"zh": "打印机缺纸", "en": "Printer out of paper"},
  "reason.printer_unavailable": {"zh": "打印机故障", "en": "Printer not working"},
  "reason.maintenance": {"zh": "设备维护中", "en": "Under maintenance"},
  "reason.out_of_service": {"zh": "暂停服务", "en": "Out of service"},
  "reason.door_open": {"zh": "机柜门已打开", "en": "Cabinet door open"},
  "reason.device_missing": {"zh": "所需设备故障", "en": "A device it needs is not working"},
  "reason.device_offline": {"zh": "所需设备暂时无法连接", "en": "A device it needs is not answering"},
  "reason.other": {"zh": "暂不可用", "en": "Not available now"},

  "banner.offline": {"zh": "网络中断：仅可办理无需联网的业务", "en": "Network offline: only services that work offline are available"},
  "banner.takeCard": {"zh": "请取走您的身份证", "en": "Please take your ID card"},

  "mode.maintenance.heading": {"zh": "设备维护中", "en": "Under maintenance"},
  "mode.maintenance.body": {"zh": "工作人员正在维护本机，请稍后再来或使用其他自助机。", "en": "Staff are servicing this kiosk. Please come back later or use another kiosk."},
  "mode.out_of_service.heading": {"zh": "暂停服务", "en": "Out of service"},
  "mode.out_of_service.body": {"zh": "本机暂时无法提供服务，请使用其他自助机或前往服务窗口办理。", "en": "This kiosk cannot serve you right now. Please use another kiosk or a service counter."},

  "wait.heading": {"zh": "请稍候", "en": "Please wait"},
  "wait.body": {"zh": "正在连接自助机服务…", "en": "Connecting to the kiosk…"},
  "wait.staleToken": {"zh": "自助机服务已重启，本页面的访问令牌已失效。请稍候，或用新的地址重新打开本页面。", "en": "The kiosk service restarted and this page's access token is no longer valid. Please wait, or open this page again at its new address."},
  "wait.noToken": {"zh": "缺少访问令牌：请用自助机给出的地址打开本页面。", "en": "No access token: open this page at the address the kiosk gives."},

  "step.progress": {"zh": "第 {index} 步，共 {count} 步", "en": "Step {index} of {count}"},
  "step.remaining": {"zh": "剩余 {seconds} 秒", "en": "{seconds} s left"},
  "step.hurry": {"zh": "时间快到了，需要的话请点“延长时间”", "en": "Time is nearly up: tap “More time” if you need it"},
  "step.name.read_id": {"zh": "读取身份证", "en": "Read ID card"},
  "step.name.capture_photo": {"zh": "拍摄照片", "en": "Photo"},
  "step.name.capture_address": {"zh": "邮寄地址", "en": "Mailing address"},
  "step.name.confirm": {"zh": "核对信息", "en": "Check"},
  "step.name.scan_payment": {"zh": "扫码支付", "en": "Payment"},
  "step.name.print_receipt": {"zh": "打印凭条", "en": "Receipt"},

  "btn.moreTime": {"zh": "延长时间", "en": "More time"},
  "btn.cancel": {"zh": "取消办理", "en": "Cancel"},
  "btn.confirm": {"zh": "确认办理", "en": "Confirm"},
  "btn.home": {"zh": "返回首页", "en": "Back to home"},
  "btn.accept": {"zh": "使用这张照片", "en": "Use this photo"},
  "btn.retake": {"zh": "重拍", "en": "Retake"},
  "btn.consentYes": {"zh": "同意保存", "en": "Keep my photo"},
  "btn.consentNo": {"zh": "不同意", "en": "Do not keep it"},
  "btn.useCardAddress": {"zh": "使用身份证上的地址", "en": "Use the address on my ID card"},
  "btn.otherAddress": {"zh": "填写其他地址", "en": "Enter another address"},
  "btn.submitAddress": {"zh": "提交地址", "en": "Submit address"},
  "btn.back": {"zh": "返回", "en": "Back"},
  "btn.delete": {"zh": "删除", "en": "Delete"},
  "btn.clear": {"zh": "清空", "en": "Clear"},
  "btn.pinyin": {"zh": "拼音输入", "en": "Pinyin input"},
  "keyboard.space": {"zh": "空格", "en": "Space"},
  "keypad.label": {"zh": "数字键盘", "en": "Number keypad"},

  "read_id.heading": {"zh": "请放置身份证", "en": "Place your ID card"},
  "read_id.body": {"zh": "请将身份证平放在屏幕下方的读卡区（图中虚线框），读取完成前请勿移动。", "en": "Lay your ID card flat on the card reader below the screen (the dashed box in the picture). Keep it still until it has been read."},
  "read_id.img": {"zh": "示意图：读卡区在屏幕下方，身份证正面朝上平放", "en": "Drawing: the card reader is below the screen; lay the card flat, face up"},
  "card.rejected.unreadable": {"zh": "未能读取证件，请拿起后重新放置", "en": "The card could not be read. Lift it and place it again."},
  "card.rejected.check_character": {"zh": "证件号码校验失败，请使用本人有效证件", "en": "The card's number did not check out. Please use your own valid card."},
  "card.rejected.other": {"zh": "此证件无法使用，请换一张证件", "en": "This card cannot be used. Please try another card."},
  "card.read": {"zh": "已读取证件", "en": "Card read"},

  "card.type.resident": {"zh": "居民身份证", "en": "Resident ID card"},
  "card.type.gat_permit": {"zh": "港澳台居民居住证", "en": "Hong Kong, Macao and Taiwan residence permit"},
  "card.type.foreign_pr_2017": {"zh": "外国人永久居留身份证", "en": "Foreign permanent resident ID card"},
  "card.type.foreign_pr_2023": {"zh": "外国人永久居留身份证", "en": "Foreign permanent resident ID card"},
  "card.type.other": {"zh": "证件", "en": "ID card"},

  "capture_photo.heading": {"zh": "拍摄照片", "en": "Your photo"},
  "capture_photo.body": {"zh": "请正对屏幕上方的摄像头，摘下帽子，保持不动。", "en": "Look at the camera above the screen, take off any hat and keep still."},
  "capture_photo.img": {"zh": "示意图：摄像头在屏幕上方", "en": "Drawing: the camera is above the screen"},
  "capture_photo.taking": {"zh": "正在拍照，请保持不动…", "en": "Taking your photo, please keep still…"},
  "capture_photo.preview": {"zh": "刚拍摄的照片", "en": "The photo just taken"},
  "capture_photo.retakesLeft": {"zh": "还可重拍 {n} 次", "en": "{n} retakes left"},
  "capture_photo.noRetakes": {"zh": "已不能再重拍", "en": "No retakes left"},
  "consent.heading": {"zh": "是否保存您的照片？", "en": "May we keep your photo?"},
  "consent.body": {"zh": "默认情况下，照片只用于本次办理，办理结束即删除。如您同意，照片将加密存档，供审核时核对。", "en": "By default your photo is used only now and erased when you finish. If you agree, it is kept encrypted with your application for checking."},
  "consent.yes": {"zh": "您已同意保存照片", "en": "You agreed to keep your photo"},
  "consent.no": {"zh": "照片将在办理结束后删除", "en": "Your photo will be erased when you finish"},

  "capture_address.heading": {"zh": "邮寄地址", "en": "Mailing address"},
  "capture_address.body": {"zh": "证件办好后将通过 EMS 邮寄给您。请先输入手机号码，方便快递员联系您。", "en": "Your document will be mailed to you by EMS. First enter your mobile number so the courier can reach you."},
  "capture_address.cardHint": {"zh": "身份证上的地址由自助机直接使用，不会显示在屏幕上。", "en": "The kiosk uses the address on your card directly; it is not shown on the screen."},
  "capture_address.otherHeading": {"zh": "填写收件信息", "en": "Where to send it"},
  "field.phone": {"zh": "手机号码", "en": "Mobile number"},
  "field.recipient": {"zh": "收件人", "en": "Recipient"},
  "field.address": {"zh": "详细地址", "en": "Address"},
  "field.postcode": {"zh": "邮政编码", "en": "Postcode"},
  "address.invalidPhone": {"zh": "请输入 11 位手机号码", "en": "Enter an 11-digit mobile number"},
  "address.invalidPostcode": {"zh": "请输入 6 位邮政编码", "en": "Enter a 6-digit postcode"},
  "address.missing": {"zh": "请填写收件人和详细地址", "en": "Enter the recipient and the address"},
  "address.noCardAddress": {"zh": "您的证件上没有可用的地址，请填写邮寄地址", "en": "Your card has no address we can use. Please enter a mailing address."},
  "address.rejected": {"zh": "地址未被接受，请检查后重新提交", "en": "The address was not accepted. Please check it and submit again."},
  "address.pinyinHint": {"zh": "每次输入一个字的拼音，再点选上方的汉字", "en": "Type one character’s pinyin, then tap the character above the keys"},

  "confirm.heading": {"zh": "请核对信息", "en": "Please check"},
  "confirm.service": {"zh": "办理业务", "en": "Service"},
  "confirm.name": {"zh": "姓名", "en": "Name"},
  "confirm.id": {"zh": "证件号码", "en": "ID number"},
  "confirm.cardType": {"zh": "证件类型", "en": "Card"},
  "confirm.next": {"zh": "确认后", "en": "After you confirm"},
  "confirm.noCard": {"zh": "本业务无需读取身份证", "en": "This service does not read an ID card"},
  "next.scan_payment": {"zh": "扫描您的付款码缴费", "en": "You pay by showing your payment code"},
  "next.print_receipt": {"zh": "打印凭条", "en": "Your receipt is printed"},
  "next.mail": {"zh": "证件将邮寄到您提供的地址", "en": "The document is mailed to the address you gave"},
  "next.done": {"zh": "办理完成", "en": "The service is complete"},

  "scan_payment.heading": {"zh": "扫码支付", "en": "Pay with your payment code"},
  "scan_payment.body": {"zh": "请打开微信或支付宝的付款码，对准屏幕右下方的扫码窗口。", "en": "Open your WeChat or Alipay payment code and hold it over the scanner window at the lower right of the screen."},
  "scan_payment.img": {"zh": "示意图：扫码窗口在屏幕右下方", "en": "Drawing: the scanner window is at the lower right of the screen"},
  "payment.rejected": {"zh": "这不是付款码，请出示微信或支付宝的付款码", "en": "That is not a payment code. Please show your WeChat or Alipay payment code."},

  "print_receipt.heading": {"zh": "正在打印…", "en": "Printing…"},
  "print_receipt.body": {"zh": "请稍候，凭条将从屏幕下方的出纸口送出。", "en": "Please wait: the receipt comes out of the slot below the screen."},
  "receipt.printed": {"zh": "凭条已打印，请取走", "en": "Receipt printed: please take it"},
  "receipt.failed": {"zh": "凭条未能打印，您的业务已办结并记录在案", "en": "The receipt could not be printed. Your service is complete and recorded."},
  "receipt.skipped": {"zh": "打印机暂不可用，凭条未能打印，您的业务已办结并记录在案", "en": "The printer is not available, so the receipt could not be printed. Your service is complete and recorded."},

  "end.completed.heading": {"zh": "办理完成", "en": "Done"},
  "end.receiptNumber": {"zh": "业务编号：{value}", "en": "Receipt number: {value}"},
  "end.waybill": {"zh": "邮件单号：{value}", "en": "Waybill number: {value}"},
  "end.mailed": {"zh": "证件办好后将邮寄给您，可凭邮件单号查询。", "en": "Your document will be mailed to you; track it with the waybill number."},
  "end.takeCard": {"zh": "请取走您的身份证", "en": "Please take your ID card"},
  "end.erased": {"zh": "您的信息已清除。", "en": "Your data was erased."},
  "end.cancelled.heading": {"zh": "已取消办理", "en": "Cancelled"},
  "end.timeout.heading": {"zh": "办理已结束", "en": "Session ended"},
  "end.timeout.body": {"zh": "长时间没有操作，本次办理已结束。", "en": "There was no activity for a while, so the session ended."},
  "end.fault.heading": {"zh": "设备故障", "en": "Device fault"},
  "end.fault.body": {"zh": "设备出现故障，本次办理已终止。请使用其他自助机或前往服务窗口。", "en": "A device failed, so the session was stopped. Please use another kiosk or a service counter."},
  "end.door.heading": {"zh": "暂停服务", "en": "Service paused"},
  "end.door.body": {"zh": "机柜门被打开，本次办理已终止。", "en": "The kiosk's cabinet was opened, so the session was stopped."},
  "end.notReady.heading": {"zh": "暂时无法办理", "en": "Cannot continue now"},
  "end.failed.heading": {"zh": "办理未完成", "en": "Not completed"},
  "end.failed.body": {"zh": "本次办理未能完成，请重试或前往服务窗口。", "en": "The service could not be completed. Please try again or go to a service counter."},
  "end.busy.heading": {"zh": "另一个屏幕正在使用本机", "en": "Another screen is using this kiosk"},
  "end.busy.body": {"zh": "本屏幕只能查看状态，不能办理业务。", "en": "This screen can show the kiosk's state but cannot start a service."},
  "end.lost.heading": {"zh": "连接中断", "en": "Connection lost"},
  "end.lost.body": {"zh": "与自助机的连接中断，本次办理已终止。", "en": "The connection to the kiosk was lost, so the session was stopped."},
  "end.returnHome": {"zh": "{seconds} 秒后返回首页", "en": "Back to home in {seconds} s"},

  "dev.toggle": {"zh": "开发者面板", "en": "Developer panel"},
  "dev.heading": {"zh": "模拟设备", "en": "Simulated devices"},
  "dev.receipt": {"zh": "最近一张凭条（模拟打印机）", "en": "Last receipt (simulated printer)"},
  "dev.noReceipt": {"zh": "尚无凭条", "en": "No receipt yet"},
  "dev.result": {"zh": "结果", "en": "Result"},
  "dev.place": {"zh": "放置{kind}", "en": "Place {kind}"},
  "dev.placeBad": {"zh": "放置校验位错误的证件", "en": "Place a card with a bad check digit"},
  "dev.scanPayment": {"zh": "扫描付款码", "en": "Scan a payment code"},
  "dev.scanOther": {"zh": "扫描商品条码（非付款码）", "en": "Scan a product barcode (not a payment code)"},
  "dev.unavailable": {"zh": "开发者服务未连接", "en": "Developer service not connected"}
};

let current = "zh";

/** The language the screen shows now. */
export function language() {
  return current;
}

/** Show ``lang`` from now on; unknown languages are ignored. */
export function setLanguage(lang) {
  if (LANGUAGES.includes(lang)) {
    current = lang;
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  }
}

/** The string ``key`` in the current language with ``{name}`` placeholders filled. */
export function t(key, vars = {}, lang = current) {
  const entry = STRINGS[key];
  if (!entry) {
    return key;  // a missing key shows itself, so it is seen and fixed, never blank
  }
  return entry[lang].replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** Whether ``key`` has a string (keys built from what the agent sends may not). */
export function has(key) {
  return Object.hasOwn(STRINGS, key);
}

/** The reason a service or session is unavailable, for a citizen. */
export function reasonText(reason) {
  return has(`reason.${reason}`) ? t(`reason.${reason}`) : t("reason.other");
}
