# SPDX-License-Identifier: Apache-2.0
"""The browser-test harness: the real agent with its local API, Debian's chromium, a leak recorder.

    screen = start_screen(workdir, broker, browser)        # or the ``kiosk_screen`` fixture
    screen.page.get_by_role("button", name="养老金发放记录打印").click()
    screen.sim("idcard", "place", "resident")               # a card on the simulated reader
    screen.expect_text("请核对信息")                          # visible text, as the citizen sees it
    tx = screen.wait_tx(lambda d: d["data"].get("service") == "pension_record_print")
    screen.assert_no_leaks()                                 # frames, console, DOM, storage, cookies
    screen.assert_contract()                                 # every frame against the local API's schemas

    citizen = Citizen(screen)                                # the same, as what a person reads and taps
    citizen.choose("pension_record_print"); citizen.place_card(); citizen.checks_details()

Nothing is mocked: the agent is ``python -m agent run`` in its own process on
simulated peripherals (pty simulators), talking to a real Mosquitto; the page
is served by the agent's own local API server and driven in chromium. What
the page receives over its WebSockets, what it logs to the console and what
it leaves in the DOM and in storage is recorded, so a test can assert that
the simulated card's full ID number, name and address never reached it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sim.devbroker import DevBroker, free_port
from agent.sim.devrun import write_sim_config

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "PageRecorder", "KioskScreen", "Operator", "Citizen", "launch_browser",
           "start_screen", "start_agent_with_api", "running_screen", "card_secrets", "find_secrets",
           "local_api_toml", "session_tx", "pension_journey", "PAYMENT_CODE", "ALIPAY_CODE", "PHONE", "TEXT"]

CHROMIUM = "/usr/bin/chromium"
# What works as root in a container, and keeps chromium off the network and quiet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Codes the scanner driver classifies as payment codes (hal/protocols/scanner.py).
PAYMENT_CODE = "134567890123456789"     # WeChat Pay
ALIPAY_CODE = "281234567890123456"      # Alipay
# A kiosk screen's size in CSS pixels: a portrait 1080 x 1920 touchscreen.
VIEWPORT = {"width": 1080, "height": 1920}
TOKEN_FILE = "ui-token"


def launch_browser(playwright: Any, *, headless: bool = True) -> Any:
    """Debian's chromium through Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS)


def local_api_toml(port: int, token_file: Path, extra: str = "") -> str:
    """The ``[local_api]`` table that turns the server on (one place: names follow agent/config.py)."""
    return f'\n[local_api]\nenabled = true\nport = {port}\ntoken_file = "{token_file}"\n{extra}'


# -- citizen data the page must never receive ----------------------------------------

def card_secrets(kind: str = "resident") -> list[str]:
    """The full ID number, names and address of the simulated card ``kind`` (hal/sim data)."""
    from hal.sim.idcard import sample_card
    card = sample_card(kind)
    values = [card.id_number, card.name, getattr(card, "name_en", None), getattr(card, "address", None)]
    return [v for v in values if v]


def _encodings(text: str) -> dict[str, bytes]:
    # The forms a leak would take: UTF-8, the card's own UTF-16-LE, GB18030, JSON's \\u escapes.
    return {"utf-8": text.encode("utf-8"), "utf-16-le": text.encode("utf-16-le"),
            "gb18030": text.encode("gb18030"), "json-escaped": json.dumps(text).strip('"').encode("ascii")}


def find_secrets(blob: str | bytes, secrets: list[str]) -> list[str]:
    """Which of ``secrets`` occur in ``blob`` in any of the encodings above."""
    data = blob.encode("utf-8") if isinstance(blob, str) else blob
    return [f"{secret!r} as {name}" for secret in secrets
            for name, form in _encodings(secret).items() if form and form in data]


# -- what the page received ---------------------------------------------------------------

@dataclass
class PageRecorder:
    """Every WebSocket frame the page received (and sent), its console and its uncaught errors."""

    received: list[tuple[str, str | bytes]] = field(default_factory=list)   # (ws url path, payload)
    sent: list[tuple[str, str | bytes]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("websocket", self._on_websocket)
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _on_websocket(self, ws: Any) -> None:
        path = re.sub(r"\?.*$", "", ws.url)        # the token stays out of reports
        self.sockets.append(path)
        ws.on("framereceived", lambda payload: self.received.append((path, payload)))
        ws.on("framesent", lambda payload: self.sent.append((path, payload)))

    def messages(self, name: str | None = None) -> list[dict[str, Any]]:
        """The XFS4IoT messages received, parsed; those named ``name`` when given."""
        out = []
        for _path, payload in list(self.received):
            try:
                msg = json.loads(payload)
            except (ValueError, TypeError):
                continue
            if isinstance(msg, dict) and (name is None or msg.get("header", {}).get("name") == name):
                out.append(msg)
        return out


# -- the screen under test ------------------------------------------------------------------

class KioskScreen:
    """The page on the agent's local API, the agent process, its simulators and a ``tx`` subscriber."""

    def __init__(self, *, page: Any, context: Any, agent: AgentProcess, broker: DevBroker | None,
                 port: int, token: str, tx: Subscriber | None, recorder: PageRecorder) -> None:
        self.page, self.context, self.agent, self.broker = page, context, agent, broker
        self.port, self.token, self.tx, self.recorder = port, token, tx, recorder

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    # driving the hardware, as the citizen's hands would
    def sim(self, device: str, action: str, *args: str) -> dict[str, Any]:
        """A simulator control action through the agent's control socket (``kiosk-agent sim``)."""
        reply = self.agent.sim(device, action, *args)
        assert reply.get("ok"), f"sim {device} {action} {args}: {reply}"
        return reply

    def place_card(self, kind: str = "resident") -> None:
        self.sim("idcard", "place", kind)

    def lift_card(self) -> None:
        self.sim("idcard", "remove")

    def scan(self, code: str = PAYMENT_CODE) -> dict[str, Any]:
        return self.sim("scanner", "scan", code)

    def printed(self) -> list[str]:
        """What the simulated printer received, as text lines (its ESC/POS transcript)."""
        return list(self.sim("printer", "transcript")["transcript"])

    # what the citizen sees
    def button(self, name: str | re.Pattern[str]) -> Any:
        return self.page.get_by_role("button", name=name)

    def click(self, name: str | re.Pattern[str], timeout: float = 20_000) -> None:
        self.button(name).first.click(timeout=timeout)

    def expect_text(self, text: str | re.Pattern[str], timeout: float = 20_000) -> Any:
        """Wait until ``text`` is visible on the screen; the locator."""
        from playwright.sync_api import expect
        # On the screen itself: the aria-live region repeats some texts in a 1-pixel box that counts as visible.
        locator = self.page.locator("header, main").get_by_text(text).first
        expect(locator).to_be_visible(timeout=timeout)
        return locator

    def visible_text(self) -> str:
        return str(self.page.locator("body").inner_text())

    # the broker side
    def wait_tx(self, predicate: Callable[[Any], bool] | None = None, timeout: float = 40.0) -> Any:
        """The latest ``tx`` payload at the broker matching ``predicate``."""
        assert self.tx is not None, "no broker subscriber (the screen was started without a broker)"
        return self.tx.wait_for("/tx", predicate, timeout).data

    # leaks
    def snapshot(self) -> dict[str, str]:
        """What the page holds now: DOM (markup and text), Web Storage, cookies."""
        # An opaque origin (about:blank) has no storage; the kiosk's own origin always has.
        storage = self.page.evaluate(
            "() => { try { return JSON.stringify({local: Object.entries(localStorage),"
            " session: Object.entries(sessionStorage)}); } catch (e) { return 'no storage: ' + e.name; } }")
        return {"dom": str(self.page.content()), "text": self.visible_text(), "storage": str(storage),
                "cookies": json.dumps(self.context.cookies(), ensure_ascii=False)}

    def leaks(self, secrets: list[str] | None = None) -> list[str]:
        """Where any of ``secrets`` (default: the resident card's) reached the page."""
        secrets = secrets if secrets is not None else card_secrets("resident")
        found = []
        for path, payload in list(self.recorder.received):
            found += [f"ws frame on {path}: {hit}" for hit in find_secrets(payload, secrets)]
        for line in list(self.recorder.console):
            found += [f"console: {hit}" for hit in find_secrets(line, secrets)]
        for where, blob in self.snapshot().items():
            found += [f"{where}: {hit}" for hit in find_secrets(blob, secrets)]
        return found

    def assert_no_leaks(self, secrets: list[str] | None = None) -> None:
        found = self.leaks(secrets)
        assert not found, "citizen data reached the page:\n" + "\n".join(found)

    def contract_errors(self) -> list[str]:
        """Messages the page received that break docs/local-api.yaml's schemas (agent/localapi/schemas)."""
        from agent.localapi.contract import validate_message
        errors = []
        for path, payload in list(self.recorder.received):
            try:
                validate_message(json.loads(payload))
            except Exception as exc:  # noqa: BLE001 - every kind of breach is reported, with the frame
                errors.append(f"{path}: {exc.__class__.__name__}: {str(exc)[:300]} in {str(payload)[:200]}")
        return errors

    def assert_contract(self) -> None:
        errors = self.contract_errors()
        assert not errors, "frames that break the local API contract:\n" + "\n".join(errors)

    def agent_errors(self) -> list[str]:
        """ERROR / CRITICAL records and stray tracebacks in the agent's log: a journey should leave none."""
        found = []
        for record in _log_records(self.agent.log):
            head = record[0]
            if not _LOG_LINE.match(head):
                if any(line.startswith("Traceback") for line in record):
                    found.append("\n".join(record)[:600])      # printed, not logged: a crash
                continue
            if (" ERROR " in head or " CRITICAL " in head) and not any(noise in head for noise in LOG_NOISE):
                found.append("\n".join(record)[:600])
        return found

    def open(self) -> None:
        self.page.goto(self.url, timeout=90_000)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.context.close()
        if self.tx is not None:
            self.tx.close()
        self.agent.kill()
        if self.agent.proc is not None:
            # The agent runs in a session of its own: its firmware runner (the co-processor's
            # MicroPython) goes with it instead of living on as an orphan.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.proc.pid, signal.SIGKILL)


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
# Known, reported, harmless: websockets logs a connection that closed before its HTTP request
# (Chromium gives up a speculative socket under load) at ERROR (/tmp/reports/ui-tests-to-api-server.md).
LOG_NOISE = ("agent.localapi.websockets: opening handshake failed",)


def _log_records(text: str) -> list[list[str]]:
    """The log's lines grouped into records: a timestamped line and its continuation lines."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if _LOG_LINE.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


def start_agent_with_api(workdir: Path, broker_url: str, *, extra: str = "", api_extra: str = "",
                         port: int | None = None, overrides: dict[str, str] | None = None
                         ) -> tuple[AgentProcess, int, str]:
    """The agent process on simulated hardware with the local API on a free port; (agent, port, token)."""
    port = port or free_port()
    state = workdir / "state"
    token_file = state / TOKEN_FILE
    path = write_sim_config(workdir / "agent.toml", broker_url, state, overrides=overrides,
                            extra=extra + local_api_toml(port, token_file, api_extra))
    agent = AgentProcess(workdir, broker_url=broker_url, config_text=path.read_text(encoding="utf-8")).start()

    def ready() -> bool:
        assert agent.proc is not None
        if agent.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {agent.proc.returncode}:\n{agent.log[-3000:]}")
        # The agent writes the token once the server listens (a bare TCP probe would log a failed handshake).
        return token_file.exists() and token_file.stat().st_size > 0

    try:
        # Generous: seven people share two cores here, and a start takes seconds under that load.
        wait_until(ready, 90, message=f"the local API on port {port} and its token file")
    except AssertionError:
        agent.kill()
        raise AssertionError(f"local API did not come up; agent log tail:\n{agent.log[-3000:]}") from None
    return agent, port, token_file.read_text(encoding="utf-8").strip()


def start_screen(workdir: Path, broker: DevBroker | None, browser: Any, *, extra: str = "",
                 api_extra: str = "", broker_url: str | None = None, open_page: bool = True,
                 viewport: dict[str, int] | None = None, locale: str = "zh-CN",
                 device_scale_factor: float = 1.0) -> KioskScreen:
    """Agent + page. ``broker_url`` overrides the broker (a closed port: the kiosk offline)."""
    url = broker_url or (broker.url if broker is not None else None)
    assert url is not None, "a broker or a broker_url"
    tx = Subscriber(broker.url, "kiosk/#") if broker is not None and broker_url is None else None
    try:
        agent, port, token = start_agent_with_api(workdir, url, extra=extra, api_extra=api_extra)
    except BaseException:
        if tx is not None:
            tx.close()
        raise
    context = browser.new_context(viewport=viewport or VIEWPORT, locale=locale,
                                  device_scale_factor=device_scale_factor)
    page = context.new_page()
    recorder = PageRecorder()
    recorder.attach(page)
    screen = KioskScreen(page=page, context=context, agent=agent, broker=broker, port=port, token=token,
                         tx=tx, recorder=recorder)
    if open_page:
        screen.open()
    return screen


@contextlib.contextmanager
def running_screen(workdir: Path, browser: Any, **kwargs: Any) -> Iterator[KioskScreen]:
    """A broker of its own and a screen, outside pytest (``make screenshots``, bench/ui.py)."""
    with DevBroker(workdir / "broker") as broker:
        screen = start_screen(workdir / "agent", broker, browser, **kwargs)
        try:
            yield screen
        finally:
            screen.close()


class Operator:
    """A fleet operator with a signing key the kiosk trusts, using the real tool (kioskctl cmd)."""

    def __init__(self, directory: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from agent.wire.signing import public_b64
        key = Ed25519PrivateKey.generate()
        directory.mkdir(parents=True, exist_ok=True)
        self.key_file = directory / "op-1.key"
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.key_file.chmod(0o600)
        self.trust = (f'\n[[commands.operators]]\nid = "op-1"\npublic_key = "{public_b64(key)}"\n'
                      'role = "operator"\n')

    def set_mode(self, broker: DevBroker, mode: str) -> None:
        """``kioskctl cmd ... set-mode mode=MODE``, as staff would; returns once the kiosk applied it."""
        kioskctl = Path(sys.executable).parent / "kioskctl"
        done = subprocess.run([str(kioskctl), "cmd", "--broker", broker.url, "--fleet", "dev", "--key",
                               str(self.key_file), "--timeout", "60", "sim-0001", "set-mode", f"mode={mode}"],
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"kioskctl set-mode {mode}: {done.stdout}{done.stderr}"


# -- journeys: what a citizen does and reads ----------------------------------------------
# The texts are copied from agent/localapi/ui/js/i18n.js on purpose: a test that read them from
# the UI would pass whatever the screen said. Renaming one there means renaming it here.

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "home": "请选择要办理的业务", "place_card": "请放置身份证", "check": "请核对信息", "confirm": "确认办理",
        "printing": "正在打印…", "printed": "凭条已打印，请取走", "done": "办理完成", "take_card": "请取走您的身份证",
        "receipt_no": "业务编号：", "waybill": "邮件单号：", "photo": "拍摄照片", "use_photo": "使用这张照片",
        "retake": "重拍", "consent_no": "不同意", "consent_yes": "同意保存", "address": "邮寄地址",
        "use_card_address": "使用身份证上的地址", "other_address": "填写其他地址", "submit_address": "提交地址",
        "pay": "扫码支付", "not_paid_code": "这不是付款码", "cancel": "取消办理", "more_time": "延长时间",
        "home_button": "返回首页", "erased": "您的信息已清除。", "timeout": "办理已结束",
        "receipt_failed": "凭条未能打印，您的业务已办结并记录在案", "door": "机柜门被打开，本次办理已终止。",
        "paused": "暂停服务", "offline_banner": "网络中断：仅可办理无需联网的业务",
        "unavailable": "暂不可用：", "paper_out": "打印机缺纸", "offline": "需要联网，网络已中断",
        "elder": "大字模式", "language": "English", "remaining": "剩余",
    },
    "en": {
        "home": "Choose a service", "place_card": "Place your ID card", "check": "Please check", "confirm": "Confirm",
        "printing": "Printing…", "printed": "Receipt printed: please take it", "done": "Done",
        "take_card": "Please take your ID card", "receipt_no": "Receipt number: ", "waybill": "Waybill number: ",
        "photo": "Your photo", "use_photo": "Use this photo", "retake": "Retake", "consent_no": "Do not keep it",
        "consent_yes": "Keep my photo", "address": "Mailing address",
        "use_card_address": "Use the address on my ID card", "other_address": "Enter another address",
        "submit_address": "Submit address", "pay": "Pay with your payment code",
        "not_paid_code": "That is not a payment code", "cancel": "Cancel", "more_time": "More time",
        "home_button": "Back to home", "erased": "Your data was erased.", "timeout": "Session ended",
        "receipt_failed": "The receipt could not be printed. Your service is complete and recorded.",
        "door": "The kiosk's cabinet was opened, so the session was stopped.", "paused": "Service paused",
        "offline_banner": "Network offline: only services that work offline are available",
        "unavailable": "Unavailable: ", "paper_out": "Printer out of paper",
        "offline": "Needs the network, which is down",
        "elder": "Large text", "language": "中文", "remaining": "left",
    },
}

# The default catalogue (agent/data/services.toml): id -> (zh, en)
SERVICE_NAMES = {
    "driving_licence_renewal": ("机动车驾驶证期满换证", "Driving licence renewal"),
    "pension_record_print": ("养老金发放记录打印", "Pension payment record print"),
    "utility_bill_payment": ("水电燃气费缴纳", "Utility bill payment"),
    "residence_permit_application": ("居住证申领", "Residence permit application"),
}
PHONE = "13912345678"


def one_pension_service(confirm_s: float, other_s: float) -> str:
    """A catalogue of the pension record print alone, its confirm step ``confirm_s`` long: walking away
    takes seconds, not minutes."""
    return f'''
[[services]]
id = "pension_record_print"
name_zh = "养老金发放记录打印"
name_en = "Pension payment record print"
offline = true
receipt = "purpose"
steps = [{{ kind = "read_id", timeout_s = {other_s} }}, {{ kind = "confirm", timeout_s = {confirm_s} }},
         {{ kind = "print_receipt", timeout_s = {other_s} }}]
'''


class Citizen:
    """One person at the screen, reading ``lang``: each method is a thing they see or do."""

    def __init__(self, screen: KioskScreen, lang: str = "zh") -> None:
        self.screen, self.lang, self.page = screen, lang, screen.page

    def text(self, key: str) -> str:
        return TEXT[self.lang][key]

    def sees(self, key_or_text: str | re.Pattern[str], timeout: float = 30_000) -> Any:
        text = TEXT[self.lang].get(key_or_text, key_or_text) if isinstance(key_or_text, str) else key_or_text
        return self.screen.expect_text(text, timeout=timeout)

    def tap(self, key_or_text: str, timeout: float = 20_000) -> None:
        self.screen.click(TEXT[self.lang].get(key_or_text, key_or_text), timeout=timeout)

    def tile(self, service: str) -> Any:
        """The service's tile on the home screen, found by the name the citizen reads."""
        name = SERVICE_NAMES[service][0 if self.lang == "zh" else 1]
        return self.page.get_by_role("button", name=name)

    def at_home(self, timeout: float = 40_000) -> None:
        self.sees("home", timeout)

    def switch_language(self) -> None:
        """The language button; the citizen now reads the other language."""
        self.tap("language")
        self.lang = "en" if self.lang == "zh" else "zh"
        self.at_home()

    def choose(self, service: str) -> None:
        self.at_home()
        tile = self.tile(service)
        from playwright.sync_api import expect
        expect(tile).to_be_enabled(timeout=20_000)
        tile.click()

    def place_card(self, kind: str = "resident") -> None:
        self.sees("place_card")
        self.screen.place_card(kind)

    def checks_details(self, kind: str = "resident") -> None:
        """The confirm screen shows the masked name and number of the card, and not the full ones."""
        from agent.sessions.sessionio import mask_id, mask_name
        from hal.sim.idcard import sample_card
        card = sample_card(kind)
        self.sees("check")
        self.sees(str(mask_id(card.id_number)))
        self.sees(str(mask_name(card.name or card.name_en)))

    def accepts_photo(self, consent: bool | None = None) -> None:
        self.sees("photo")
        if consent is not None:
            self.tap("consent_yes" if consent else "consent_no")
        preview = self.page.locator("img.photo")
        preview.wait_for(state="visible", timeout=30_000)
        assert self.page.evaluate("img => img.naturalWidth > 0 && img.complete", preview.element_handle()), \
            "the photo preview did not render"
        self.tap("use_photo")

    def card_address(self, phone: str = PHONE) -> None:
        """Mobile number on the keypad, then "use the address on my ID card"."""
        self.sees("address")
        self.keypad(phone)
        self.tap("use_card_address")

    def keypad(self, digits: str) -> None:
        """Digits on the on-screen number keypad, touch only."""
        keypad = self.page.locator("[data-keyboard]")
        for digit in digits:
            keypad.get_by_role("button", name=digit, exact=True).first.click()

    def pays(self, code: str = PAYMENT_CODE) -> None:
        self.sees("pay")
        self.screen.scan(code)

    def confirms(self) -> None:
        self.tap("confirm")

    def done(self, *, receipt: bool = True, waybill: bool = False) -> dict[str, str]:
        """The end screen: receipt number (and waybill) as shown; then back home."""
        self.sees("done", 40_000)
        shown: dict[str, str] = {}
        if receipt:
            shown["receipt"] = self.sees("receipt_no").inner_text().split("：" if self.lang == "zh" else ": ", 1)[1]
        if waybill:
            shown["waybill"] = self.sees("waybill").inner_text().split("：" if self.lang == "zh" else ": ", 1)[1]
        return shown

    def goes_home(self) -> None:
        self.tap("home_button")
        self.at_home()


def session_tx(screen: KioskScreen, service: str, timeout: float = 40.0) -> Any:
    """The ``tx`` record of the last session of ``service`` at the broker (its ``data``)."""
    return screen.wait_tx(lambda d: d["data"].get("type") == "session" and d["data"].get("service") == service,
                          timeout)["data"]


def pension_journey(screen: KioskScreen, card: str = "resident", lang: str = "zh") -> Any:
    """The shortest journey with a card: choose, place the card, check, confirm, receipt. Its tx data."""
    citizen = Citizen(screen, lang)
    citizen.choose("pension_record_print")
    citizen.place_card(card)
    citizen.checks_details(card)
    citizen.confirms()
    citizen.sees("printed", 40_000)
    citizen.done()
    citizen.goes_home()
    return session_tx(screen, "pension_record_print")
