// SPDX-License-Identifier: Apache-2.0
// Every string the dashboard shows, in Chinese and English, in one place.
// Tests find buttons and texts by these strings: rename one only together
// with tests/dashboard. The STRINGS literal is strict JSON (the static test
// parses it). The chosen language is kept in the kd_lang cookie, which the
// server reads too.

export const LANGUAGES = ["zh", "en"];

export const STRINGS = {
  "app.title": {"zh": "自助机运行看板", "en": "Kiosk fleet dashboard"},
  "lang.switch": {"zh": "English", "en": "中文"},
  "loading": {"zh": "正在加载…", "en": "Loading…"},

  "page.login.title": {"zh": "登录", "en": "Sign in"},
  "page.fleet.title": {"zh": "设备总览", "en": "Fleet overview"},
  "page.kiosk.title": {"zh": "自助机详情", "en": "Kiosk"},
  "page.alarms.title": {"zh": "告警", "en": "Alarms"},
  "page.reports.title": {"zh": "业务报表", "en": "Reports"},
  "page.audit.title": {"zh": "审计日志", "en": "Audit trail"},

  "nav.label": {"zh": "主导航", "en": "Main"},
  "nav.skip": {"zh": "跳到正文", "en": "Skip to content"},
  "nav.fleet": {"zh": "总览", "en": "Fleet"},
  "nav.alarms": {"zh": "告警", "en": "Alarms"},
  "nav.reports": {"zh": "报表", "en": "Reports"},
  "nav.audit": {"zh": "审计", "en": "Audit"},
  "nav.backToFleet": {"zh": "← 返回总览", "en": "← Back to the fleet"},

  "me.signedIn": {"zh": "{user}（{role}）", "en": "{user} ({role})"},
  "role.viewer": {"zh": "只读", "en": "viewer"},
  "role.operator": {"zh": "值班员", "en": "operator"},
  "role.admin": {"zh": "管理员", "en": "admin"},

  "live.connecting": {"zh": "正在连接实时更新…", "en": "Connecting live updates…"},
  "live.live": {"zh": "● 实时更新", "en": "● Live"},
  "live.down": {"zh": "⚠ 实时更新中断，正在重连", "en": "⚠ Live updates interrupted, reconnecting"},

  "btn.login": {"zh": "登录", "en": "Sign in"},
  "btn.logout": {"zh": "退出登录", "en": "Sign out"},
  "btn.retry": {"zh": "重试", "en": "Try again"},
  "btn.ack": {"zh": "确认告警", "en": "Acknowledge"},
  "btn.ackSave": {"zh": "提交确认", "en": "Save acknowledgement"},
  "btn.cancel": {"zh": "取消", "en": "Cancel"},
  "btn.copy": {"zh": "复制", "en": "Copy"},
  "btn.showReport": {"zh": "查询", "en": "Show"},
  "btn.csv": {"zh": "下载 CSV", "en": "Download CSV"},

  "login.username": {"zh": "用户名", "en": "User name"},
  "login.password": {"zh": "密码", "en": "Password"},
  "login.failed": {"zh": "用户名或密码不正确。", "en": "Wrong user name or password."},
  "login.refused": {"zh": "登录请求被拒绝：请直接打开本看板的地址再登录。", "en": "The sign-in was refused: open the dashboard's own address and sign in there."},
  "login.help": {"zh": "账号由管理员创建。忘记密码请联系管理员。", "en": "Accounts are created by an administrator. Forgot your password? Ask an administrator."},

  "error.auth.required": {"zh": "登录已过期，请重新登录。", "en": "Your session has ended. Please sign in again."},
  "error.auth.forbidden": {"zh": "您的角色无权进行此操作。", "en": "Your role may not do this."},
  "error.auth.csrf": {"zh": "请求未通过安全校验，请刷新页面后重试。", "en": "The request failed its security check. Reload the page and try again."},
  "error.auth.locked": {"zh": "登录失败次数过多，账号已锁定 5 分钟。", "en": "Too many failed sign-ins: the account is locked for 5 minutes."},
  "error.request.invalid": {"zh": "请求内容有误。", "en": "The request was not valid."},
  "error.kiosk.unknown": {"zh": "没有这台自助机：既未登记，也从未上线。", "en": "No such kiosk: it is neither registered nor ever heard from."},
  "error.alarm.unknown": {"zh": "找不到这条告警。", "en": "That alarm was not found."},
  "error.alarm.already_acked": {"zh": "这条告警已被他人确认。", "en": "Someone else has already acknowledged this alarm."},
  "error.alarm.cleared": {"zh": "这条告警已解除。", "en": "This alarm has cleared."},
  "error.request.not_found": {"zh": "没有这个地址。", "en": "There is nothing at this address."},
  "error.request.method": {"zh": "不支持这种请求方式。", "en": "This kind of request is not supported here."},
  "error.internal": {"zh": "看板服务器内部出错，已记录日志。", "en": "The dashboard server failed; the error is logged."},
  "error.db.unavailable": {"zh": "数据库暂时无法访问，请稍后重试。", "en": "The database is not reachable right now. Please try again shortly."},
  "error.network": {"zh": "无法连接看板服务器，请检查网络。", "en": "Cannot reach the dashboard server. Check the network."},
  "error.other": {"zh": "出错了（HTTP {status}，{code}）。", "en": "Something went wrong (HTTP {status}, {code})."},

  "dur.lt1": {"zh": "不到 1 秒", "en": "under 1 s"},
  "dur.s": {"zh": "{s} 秒", "en": "{s} s"},
  "dur.m": {"zh": "{m} 分钟", "en": "{m} min"},
  "dur.hm": {"zh": "{h} 小时 {m} 分", "en": "{h} h {m} min"},
  "dur.dh": {"zh": "{d} 天 {h} 小时", "en": "{d} d {h} h"},
  "time.ago": {"zh": "{d}前", "en": "{d} ago"},
  "time.justNow": {"zh": "刚刚", "en": "just now"},

  "status.online": {"zh": "在线", "en": "Online"},
  "status.offline": {"zh": "离线", "en": "Offline"},
  "status.never_seen": {"zh": "— 从未上线", "en": "— Never seen"},
  "status.onlineFor": {"zh": "在线 {d}", "en": "Online for {d}"},
  "status.offlineFor": {"zh": "离线 {d}", "en": "Offline for {d}"},

  "mode.in_service": {"zh": "服务中", "en": "In service"},
  "mode.maintenance": {"zh": "维护中", "en": "Maintenance"},
  "mode.out_of_service": {"zh": "暂停服务", "en": "Out of service"},

  "paper.ok": {"zh": "正常", "en": "OK"},
  "paper.low": {"zh": "纸将用完", "en": "Low"},
  "paper.out": {"zh": "缺纸", "en": "Out"},
  "paper.unknown": {"zh": "未知", "en": "Unknown"},

  "severity.critical": {"zh": "严重", "en": "Critical"},
  "severity.warning": {"zh": "警告", "en": "Warning"},
  "severity.info": {"zh": "提示", "en": "Info"},
  "alarms.badge": {"zh": "{severity} {n}", "en": "{severity} {n}"},
  "alarms.none": {"zh": "无", "en": "none"},

  "totals.heading": {"zh": "合计", "en": "Totals"},
  "totals.kiosks": {"zh": "自助机", "en": "Kiosks"},
  "totals.online": {"zh": "在线", "en": "Online"},
  "totals.offline": {"zh": "离线", "en": "Offline"},
  "totals.never": {"zh": "从未上线", "en": "Never seen"},
  "totals.critical": {"zh": "严重告警", "en": "Critical alarms"},
  "totals.warning": {"zh": "警告", "en": "Warnings"},
  "totals.info": {"zh": "提示", "en": "Info"},
  "totals.tx": {"zh": "今日业务", "en": "Transactions today"},

  "sites.heading": {"zh": "按网点", "en": "By site"},
  "sites.none": {"zh": "（未设网点）", "en": "(no site)"},
  "sites.counts": {"zh": "在线 {online} · 离线 {offline}", "en": "{online} online · {offline} offline"},
  "sites.tx": {"zh": "今日业务 {n}", "en": "{n} transactions today"},

  "fleet.tableHeading": {"zh": "自助机列表", "en": "Kiosks"},
  "fleet.caption": {"zh": "自助机列表，可按列排序", "en": "Kiosks, sortable by column"},
  "fleet.shown": {"zh": "显示 {shown} / {total} 台", "en": "Showing {shown} of {total}"},
  "fleet.empty": {"zh": "没有符合条件的自助机。", "en": "No kiosk matches."},

  "filter.status": {"zh": "状态", "en": "Status"},
  "filter.site": {"zh": "网点", "en": "Site"},
  "filter.search": {"zh": "搜索", "en": "Search"},
  "filter.searchHint": {"zh": "自助机编号或网点", "en": "Kiosk id or site"},
  "filter.allStatuses": {"zh": "全部", "en": "All"},
  "filter.allSites": {"zh": "全部网点", "en": "All sites"},
  "filter.online": {"zh": "在线", "en": "Online"},
  "filter.offline": {"zh": "离线", "en": "Offline"},
  "filter.alarm": {"zh": "有告警", "en": "With alarms"},
  "filter.paper": {"zh": "纸张不足", "en": "Paper low or out"},
  "filter.maintenance": {"zh": "维护或暂停服务", "en": "Maintenance or out of service"},
  "filter.never_seen": {"zh": "从未上线", "en": "Never seen"},

  "col.kiosk": {"zh": "自助机", "en": "Kiosk"},
  "col.site": {"zh": "网点", "en": "Site"},
  "col.status": {"zh": "在线状态", "en": "Status"},
  "col.mode": {"zh": "模式", "en": "Mode"},
  "col.alarms": {"zh": "告警", "en": "Alarms"},
  "col.paper": {"zh": "纸张", "en": "Paper"},
  "col.tx_today": {"zh": "今日业务", "en": "Tx today"},
  "col.last_seen": {"zh": "最后消息", "en": "Last seen"},
  "col.agent": {"zh": "代理版本", "en": "Agent"},
  "col.firmware": {"zh": "固件版本", "en": "Firmware"},
  "col.alarm": {"zh": "告警", "en": "Alarm"},
  "col.severity": {"zh": "级别", "en": "Severity"},
  "col.since": {"zh": "开始时间", "en": "Since"},
  "col.detail": {"zh": "详情", "en": "Detail"},
  "col.ack": {"zh": "确认", "en": "Acknowledgement"},
  "col.raised": {"zh": "发生时间", "en": "Raised"},
  "col.cleared": {"zh": "解除时间", "en": "Cleared"},
  "col.duration": {"zh": "持续时间", "en": "Duration"},
  "col.age": {"zh": "已持续", "en": "Age"},
  "col.device": {"zh": "设备", "en": "Device"},
  "col.kind": {"zh": "类型", "en": "Kind"},
  "col.state": {"zh": "状态", "en": "State"},
  "col.backend": {"zh": "接入", "en": "Backend"},
  "col.time": {"zh": "时间", "en": "Time"},
  "col.command": {"zh": "指令", "en": "Command"},
  "col.result": {"zh": "结果", "en": "Result"},
  "col.code": {"zh": "代码", "en": "Code"},
  "col.message": {"zh": "说明", "en": "Message"},
  "col.user": {"zh": "用户", "en": "User"},
  "col.action": {"zh": "操作", "en": "Action"},
  "col.target": {"zh": "对象", "en": "Target"},
  "col.remote": {"zh": "来源地址", "en": "From"},

  "kiosk.heading": {"zh": "自助机 {kiosk}", "en": "Kiosk {kiosk}"},
  "kiosk.site": {"zh": "网点", "en": "Site"},
  "kiosk.status": {"zh": "在线状态", "en": "Status"},
  "kiosk.mode": {"zh": "模式", "en": "Mode"},
  "kiosk.lastSeen": {"zh": "最后消息", "en": "Last seen"},
  "kiosk.healthAt": {"zh": "最近健康报告", "en": "Last health report"},
  "kiosk.txToday": {"zh": "今日业务", "en": "Transactions today"},
  "kiosk.disk": {"zh": "磁盘可用", "en": "Disk free"},
  "kiosk.diskValue": {"zh": "{free} / {total} MB", "en": "{free} of {total} MB"},
  "kiosk.cpuTemp": {"zh": "CPU 温度", "en": "CPU temperature"},
  "kiosk.uptime": {"zh": "系统已运行", "en": "System uptime"},
  "kiosk.agent": {"zh": "代理版本", "en": "Agent version"},
  "kiosk.firmware": {"zh": "固件版本", "en": "Firmware version"},
  "kiosk.activeAlarms": {"zh": "当前告警", "en": "Active alarms"},
  "kiosk.alarmHistory": {"zh": "告警历史", "en": "Alarm history"},
  "kiosk.plots": {"zh": "运行曲线", "en": "Health and transactions"},
  "kiosk.peripherals": {"zh": "外设", "en": "Peripherals"},
  "kiosk.commands": {"zh": "最近指令", "en": "Recent commands"},
  "kiosk.ledger": {"zh": "账本状态", "en": "Ledger status"},
  "kiosk.actions": {"zh": "操作（kioskctl 命令）", "en": "Actions (kioskctl lines)"},
  "kiosk.noActiveAlarms": {"zh": "没有未解除的告警。", "en": "No active alarm."},
  "kiosk.noAlarmHistory": {"zh": "没有告警记录。", "en": "No alarm recorded."},
  "kiosk.noPeripherals": {"zh": "尚未收到外设清单。", "en": "No peripheral inventory received yet."},
  "kiosk.noCommands": {"zh": "没有指令记录。", "en": "No command recorded."},
  "kiosk.simulated": {"zh": "模拟", "en": "Simulated"},
  "kiosk.real": {"zh": "实机", "en": "Hardware"},

  "alarm.openFor": {"zh": "已持续 {d}", "en": "open for {d}"},
  "alarm.stillOpen": {"zh": "尚未解除", "en": "Still open"},
  "alarm.clearedAfter": {"zh": "已解除，持续 {d}", "en": "Cleared after {d}"},
  "alarm.clearedAt": {"zh": "解除于 {at}", "en": "cleared {at}"},
  "alarm.latched": {"zh": "已锁存：原因消失后仍需在现场确认清除", "en": "Latched: stays raised until cleared with ack-alarm"},

  "ack.not": {"zh": "未确认", "en": "Not acknowledged"},
  "ack.by": {"zh": "{user} 于 {at} 确认", "en": "Acknowledged by {user} at {at}"},
  "ack.note": {"zh": "备注（可选，最多 500 字）", "en": "Note (optional, up to 500 characters)"},
  "ack.explain": {"zh": "确认告警表示“已有人处理”，并记入审计日志；它不会清除自助机上的告警。", "en": "Acknowledging says “someone is on it” and is audited; it does not clear the alarm at the kiosk."},
  "ack.buttonLabel": {"zh": "确认告警：{kiosk} {alarm}", "en": "Acknowledge {alarm} at {kiosk}"},
  "ack.clearAtKiosk": {"zh": "在自助机上清除：", "en": "To clear it at the kiosk:"},

  "alarms.view": {"zh": "显示范围", "en": "Show"},
  "alarms.view.open": {"zh": "未解除的告警", "en": "Open alarms"},
  "alarms.view.all": {"zh": "最近 7 天", "en": "Last 7 days"},
  "alarms.count.open": {"zh": "{n} 条未解除", "en": "{n} open"},
  "alarms.count.all": {"zh": "最近 7 天共 {n} 条", "en": "{n} in the last 7 days"},
  "alarms.empty.open": {"zh": "✓ 当前没有未解除的告警。", "en": "✓ No open alarm."},
  "alarms.empty.all": {"zh": "最近 7 天没有告警。", "en": "No alarm in the last 7 days."},

  "alarmcode.door_open": {"zh": "机柜门打开", "en": "Cabinet door open"},
  "alarmcode.tamper": {"zh": "防拆报警", "en": "Tamper"},
  "alarmcode.store_corrupt": {"zh": "本地数据库损坏", "en": "Local store corrupt"},
  "alarmcode.paper_out": {"zh": "打印机缺纸", "en": "Printer out of paper"},
  "alarmcode.paper_low": {"zh": "打印纸将用完", "en": "Printer paper low"},
  "alarmcode.printer_offline": {"zh": "打印机无响应", "en": "Printer not answering"},
  "alarmcode.printer_fault": {"zh": "打印机故障", "en": "Printer fault"},
  "alarmcode.printer_error": {"zh": "打印机故障（旧名）", "en": "Printer fault (old name)"},
  "alarmcode.idcard_offline": {"zh": "身份证阅读器无响应", "en": "ID card reader not answering"},
  "alarmcode.idcard_fault": {"zh": "身份证阅读器故障", "en": "ID card reader fault"},
  "alarmcode.idreader_fault": {"zh": "身份证阅读器故障（旧名）", "en": "ID card reader fault (old name)"},
  "alarmcode.coproc_offline": {"zh": "协处理器无响应", "en": "Co-processor not answering"},
  "alarmcode.camera_fault": {"zh": "摄像头故障", "en": "Camera fault"},
  "alarmcode.scanner_offline": {"zh": "扫码器无响应", "en": "Scanner not answering"},
  "alarmcode.disk_low": {"zh": "磁盘空间不足", "en": "Disk space low"},
  "alarmcode.temp_high": {"zh": "温度过高", "en": "Temperature high"},
  "alarmcode.undervoltage": {"zh": "供电电压不足", "en": "Undervoltage"},
  "alarmcode.outbox_backlog": {"zh": "待上传消息积压", "en": "Outbox backlog"},
  "alarmcode.clock_unsynced": {"zh": "时钟未同步", "en": "Clock not synchronised"},
  "alarmcode.publish_refused": {"zh": "消息发布被拒绝", "en": "Publishing refused"},
  "alarmcode.cert_expiring": {"zh": "证书即将过期", "en": "Certificate expiring"},

  "kind.printer": {"zh": "打印机", "en": "Printer"},
  "kind.camera": {"zh": "摄像头", "en": "Camera"},
  "kind.idcard": {"zh": "身份证阅读器", "en": "ID card reader"},
  "kind.scanner": {"zh": "扫码器", "en": "Scanner"},
  "kind.gpio-input": {"zh": "传感器", "en": "Sensor"},
  "kind.light-tower": {"zh": "指示灯", "en": "Light tower"},
  "kind.coproc": {"zh": "协处理器", "en": "Co-processor"},
  "kind.serial": {"zh": "串口设备", "en": "Serial device"},
  "kind.peripheral": {"zh": "外设", "en": "Peripheral"},

  "device.ok": {"zh": "✓ 正常", "en": "✓ OK"},
  "device.degraded": {"zh": "⚠ 降级", "en": "⚠ Degraded"},
  "device.offline": {"zh": "✗ 离线", "en": "✗ Offline"},
  "device.fault": {"zh": "✗ 故障", "en": "✗ Fault"},
  "device.unknown": {"zh": "? 未知", "en": "? Unknown"},

  "cmd.accepted": {"zh": "已接受", "en": "Accepted"},
  "cmd.in_progress": {"zh": "执行中", "en": "In progress"},
  "cmd.succeeded": {"zh": "✓ 成功", "en": "✓ Succeeded"},
  "cmd.failed": {"zh": "✗ 失败", "en": "✗ Failed"},
  "cmd.refused": {"zh": "✗ 被拒绝", "en": "✗ Refused"},

  "ledger.lastSeq": {"zh": "最新序号", "en": "Last seq"},
  "ledger.lastTx": {"zh": "最新业务记录", "en": "Last transaction"},
  "ledger.lag": {"zh": "入账延迟", "en": "Lag"},
  "ledger.gaps": {"zh": "缺口", "en": "Gaps"},
  "ledger.gapsOpen": {"zh": "{n} 个未补齐", "en": "{n} open"},
  "ledger.quarantined": {"zh": "隔离记录", "en": "Quarantined"},
  "ledger.quarantinedN": {"zh": "{n} 条", "en": "{n} records"},
  "ledger.unacked": {"zh": "待回执", "en": "Not yet acknowledged"},
  "ledger.epoch": {"zh": "数据纪元", "en": "Epoch"},
  "ledger.none": {"zh": "无", "en": "none"},

  "action.set_mode_maintenance": {"zh": "切换到维护模式", "en": "Switch to maintenance"},
  "action.set_mode_in_service": {"zh": "恢复服务", "en": "Back in service"},
  "action.print_test_page": {"zh": "打印测试页", "en": "Print a test page"},
  "action.selftest": {"zh": "设备自检", "en": "Self-test"},
  "action.ack_tamper": {"zh": "清除防拆报警", "en": "Clear the tamper alarm"},
  "actions.note": {"zh": "看板不发送任何指令。请在终端用您自己的操作员密钥运行下列命令。", "en": "The dashboard sends no command. Run these lines in a terminal with your own operator key."},
  "actions.none": {"zh": "没有可用的操作。", "en": "No action available."},
  "actions.copied": {"zh": "已复制命令：{what}", "en": "Copied the line: {what}"},
  "actions.selected": {"zh": "无法访问剪贴板：命令已选中，请按 Ctrl+C 复制。", "en": "No clipboard access: the line is selected, press Ctrl+C."},
  "actions.copyLabel": {"zh": "复制命令：{what}", "en": "Copy the line: {what}"},

  "range.label": {"zh": "时间范围", "en": "Range"},
  "range.24h": {"zh": "24 小时", "en": "24 h"},
  "range.7d": {"zh": "7 天", "en": "7 days"},
  "range.30d": {"zh": "30 天", "en": "30 days"},

  "plot.time": {"zh": "时间", "en": "Time"},
  "plot.disk": {"zh": "磁盘可用空间（MB）", "en": "Disk free (MB)"},
  "plot.temp": {"zh": "CPU 温度（°C）", "en": "CPU temperature (°C)"},
  "plot.backlog": {"zh": "待上传业务记录", "en": "Outbox backlog"},
  "plot.reconnects": {"zh": "上行重连次数", "en": "Uplink reconnects"},
  "plot.tx": {"zh": "每小时业务量", "en": "Transactions per hour"},
  "plot.summary": {"zh": "共 {n} 个数据点 · 最新 {last} · 最低 {min} · 最高 {max}", "en": "{n} points · latest {last} · lowest {min} · highest {max}"},
  "plot.offline": {"zh": "此范围内离线 {n} 次，共 {d}（图中浅红色区域）。", "en": "Offline periods in this range: {n}, {d} in all (the pale red bands)."},
  "plot.onlineThroughout": {"zh": "此范围内一直在线。", "en": "Online throughout this range."},
  "plot.noPresence": {"zh": "此范围内没有上线记录。", "en": "No connection recorded in this range."},
  "plot.empty": {"zh": "此时间范围内没有数据。", "en": "No data in this range."},

  "reports.from": {"zh": "开始日期", "en": "From"},
  "reports.to": {"zh": "结束日期（含）", "en": "To (inclusive)"},
  "reports.groupBy": {"zh": "分组", "en": "Group by"},
  "reports.by.kiosk": {"zh": "按自助机", "en": "Kiosk"},
  "reports.by.service": {"zh": "按业务", "en": "Service"},
  "reports.by.day": {"zh": "按日期", "en": "Day"},
  "reports.caption": {"zh": "{from} 至 {to} 的业务量（{by}）", "en": "Transactions {from} to {to} by {by}"},
  "reports.badRange": {"zh": "开始日期不能晚于结束日期。", "en": "The start date is after the end date."},
  "reports.total": {"zh": "合计", "en": "Total"},
  "reports.empty": {"zh": "此期间没有业务记录。", "en": "No transaction in this period."},
  "reports.note": {"zh": "统计账本中已入账的业务记录；日期按看板时区计算。", "en": "Counts the transactions stored in the ledger; days are in the dashboard's time zone."},
  "outcome.completed": {"zh": "完成", "en": "Completed"},
  "outcome.abandoned": {"zh": "放弃", "en": "Abandoned"},
  "outcome.failed": {"zh": "失败", "en": "Failed"},
  "outcome.total": {"zh": "合计", "en": "Total"},

  "service.driving_licence_renewal": {"zh": "机动车驾驶证期满换证", "en": "Driving licence renewal"},
  "service.pension_record_print": {"zh": "养老金发放记录打印", "en": "Pension payment record print"},
  "service.utility_bill_payment": {"zh": "水电燃气费缴纳", "en": "Utility bill payment"},
  "service.residence_permit_application": {"zh": "居住证申领", "en": "Residence permit application"},

  "audit.note": {"zh": "登录、登录失败、退出、告警确认和用户变更，最新的在前。", "en": "Sign-ins, failed sign-ins, sign-outs, acknowledgements and user changes, newest first."},
  "audit.empty": {"zh": "没有审计记录。", "en": "No audit entry."},
  "auditaction.login": {"zh": "登录", "en": "Sign-in"},
  "auditaction.login_failed": {"zh": "登录失败", "en": "Failed sign-in"},
  "auditaction.logout": {"zh": "退出登录", "en": "Sign-out"},
  "auditaction.alarm_ack": {"zh": "确认告警", "en": "Alarm acknowledged"},
  "auditaction.user_add": {"zh": "新增用户", "en": "User added"},
  "auditaction.user_passwd": {"zh": "修改密码", "en": "Password changed"},
  "auditaction.user_disable": {"zh": "停用用户", "en": "User disabled"},
  "auditaction.locked": {"zh": "账号锁定", "en": "Account locked"}
};

const COOKIE = "kd_lang";
let current = "zh";

/** The language the page shows now. */
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

/** The language asked for explicitly: ?lang=… in the address, else the kd_lang cookie; null if neither. */
export function chosenLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (LANGUAGES.includes(asked)) {
    return asked;
  }
  const match = document.cookie.match(/(?:^|;\s*)kd_lang=(\w+)/);
  return match && LANGUAGES.includes(match[1]) ? match[1] : null;
}

/** The browser's preference among ours (for the login page, before the server says). */
export function browserLanguage() {
  for (const tag of navigator.languages || []) {
    const lang = tag.toLowerCase().split("-")[0];
    if (LANGUAGES.includes(lang)) {
      return lang;
    }
  }
  return "zh";
}

/** Remember ``lang`` for every page (the server reads the same cookie). */
export function persistLanguage(lang) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${COOKIE}=${lang}; Path=/; Max-Age=31536000; SameSite=Strict${secure}`;
}

/** The string ``key`` in the current language with ``{name}`` placeholders filled. */
export function t(key, vars = {}, lang = current) {
  const entry = STRINGS[key];
  if (!entry) {
    return key;  // a missing key shows itself, so it is seen and fixed, never blank
  }
  const text = entry[lang];
  return text.includes("{") ? text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? "")) : text;
}

/** Whether ``key`` has a string (keys built from what the API sends may not). */
export function has(key) {
  return Object.hasOwn(STRINGS, key);
}

/** ``prefix.value`` when that string exists, else the value itself (an alarm code we have no words for yet). */
export function label(prefix, value) {
  if (value === null || value === undefined || value === "") {
    return "—";
  }
  return has(`${prefix}.${value}`) ? t(`${prefix}.${value}`) : String(value);
}
