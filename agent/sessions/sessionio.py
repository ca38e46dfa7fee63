# SPDX-License-Identifier: Apache-2.0
"""The session engine's edges: record helpers, devices, journal and outbox.

Split from :mod:`agent.sessions.engine` to keep the state machine readable; nothing
here keeps state of its own.

    mask_id("AB0000000000WXYZ")            # "AB**********WXYZ"
    mask_name("张三明")                      # "张*明"
    s10_waybill(47312482)                  # "EA473124829CN"
    io = DeviceIO(peripherals.devices, journal=journal, outbox=outbox, kiosk=cfg.kiosk)
    jpeg = await io.capture_still()        # bytearray, the caller zeroes it
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.config import KioskConfig, ServiceConfig
from agent.errors import AgentError
from hal.device import DEGRADED, OK, Peripheral
from hal.protocols.scanner import mask_code

__all__ = ["mask_id", "mask_name", "mask_reference", "s10_waybill", "dev_recipient_key", "CardFields", "DeviceIO",
           "receipt_lines", "DeviceMissing", "DEV_KEY_NAME", "PrinterProblem", "SessionJournal", "EvidenceQueue",
           "Buzzer"]

log = logging.getLogger(__name__)


class DeviceMissing(AgentError):
    """A step needs a peripheral or component this agent does not have."""

    code = "agent.session.device_missing"


# -- record helpers ------------------------------------------------------------------

def mask_id(number: str | None) -> str | None:
    """Display mask: at most the first 2 and the last 4 characters.

    >>> mask_id("AB0000000000WXYZ")
    'AB**********WXYZ'
    """
    if not number:
        return None
    # The same rule the scanner driver logs payment codes with: one definition.
    return mask_code(number.strip())


def mask_name(name: str | None) -> str | None:
    """The name as the receipt and the screen show it.

    Chinese (and other CJK) names keep the first and the last character, one
    ``*`` for each hidden one, as Chinese receipts and apps do; a name of two
    keeps the first. Latin names (a foreigner's card) keep each word's first
    letter and a fixed ``***``, so the length of the name is not told.

    >>> mask_name("张三明"), mask_name("欧阳娜娜"), mask_name("李四"), mask_name("SMITH JOHN")
    ('张*明', '欧**娜', '李*', 'S*** J***')
    """
    text = (name or "").strip()
    if not text:
        return None
    if any(ord(c) >= 0x2E80 for c in text):
        chars = [c for c in text if not c.isspace()]
        if len(chars) <= 2:
            return chars[0] + "*"
        return chars[0] + "*" * (len(chars) - 2) + chars[-1]
    words = [w for w in text.replace(",", " ").split() if w]
    return " ".join(w[0] + "***" for w in words)


def mask_reference(ref: str) -> str:
    """A payment code masked like an ID number: ``"13**********5678"``."""
    return mask_id(ref) or ""


def s10_waybill(serial: int, prefix: str = "EA", country: str = "CN") -> str:
    """A UPU S10 item number (EMS style) with its mod-11 check digit (simulated issue).

    >>> s10_waybill(47312482)
    'EA473124829CN'
    """
    digits = f"{serial % 10**8:08d}"
    total = sum(int(d) * w for d, w in zip(digits, (8, 6, 4, 2, 3, 5, 9, 7)))
    check = 11 - total % 11
    check = 0 if check == 10 else 5 if check == 11 else check
    return f"{prefix}{digits}{check}{country}"


DEV_KEY_NAME = "dev-backoffice-evidence.pem"


def dev_recipient_key(cfg: Any) -> bytes | None:
    """On a *development* kiosk with simulated hardware only: a generated back-office key.

    ``make run`` and ``kiosk-agent simulate`` need somewhere to seal to; the
    private key lands in ``storage.dir`` so ``kioskctl unseal`` can be tried.
    A production configuration must set ``evidence.recipient_public_key``.
    """
    if cfg.hal.backend != "sim" or cfg.kiosk.mode != "development":
        return None
    from agent.wire.sealing import X25519PrivateKey, load_private_key, save_private_key
    path = cfg.storage.dir / DEV_KEY_NAME
    if path.exists():
        key = load_private_key(path)
    else:
        key = X25519PrivateKey.generate()
        cfg.storage.dir.mkdir(parents=True, exist_ok=True)
        save_private_key(key, path)
    log.warning("development kiosk: evidence sealed to the generated key %s (set "
                "evidence.recipient_public_key in production)", path)
    return key.public_key().public_bytes_raw()


# -- devices, journal, outbox ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PrinterProblem:
    """Why no receipt can be printed: the printer's stable code and its alarms."""

    code: str
    alarms: tuple[str, ...]
    detail: str

    def reason(self) -> str:
        """What a UI shows: ``printer: paper_out`` (the alarms, else the code)."""
        return "printer: " + (", ".join(self.alarms) if self.alarms else self.code)


@dataclasses.dataclass
class CardFields:
    """A card record flattened for sealing; ``fields`` holds PII."""

    fields: dict[str, Any]
    photo_wlt: bytearray
    id_number: str
    card_type: str
    check_ok: bool

    def wipe(self) -> None:
        self.photo_wlt[:] = bytes(len(self.photo_wlt))
        self.fields.clear()
        self.id_number = ""


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class RecordedTx(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def seq(self) -> int: ...


class SessionJournal(Protocol):
    """Where a session's transaction is committed (:class:`agent.store.journal.Journal`)."""

    async def record(self, tx: Mapping[str, Any]) -> RecordedTx: ...

    def add_ack_listener(self, cb: Callable[[list[str]], Any]) -> None: ...


class EvidenceQueue(Protocol):
    """Where sealed evidence is queued durably (:class:`agent.store.outbox.Outbox`)."""

    async def enqueue(self, cls: str, topic: str, payload: bytes, retain: bool = False) -> int: ...


class Buzzer(Protocol):
    """The light tower's buzzer (:class:`hal.gpio.LightTower`)."""

    def buzz(self, on: bool) -> None: ...


class DeviceIO:
    """The engine's edge: the peripherals, the journal and the outbox it is given."""

    PHOTO_KEYS = ("photo_wlt", "photo", "wlt")
    TYPE_KEYS = ("card_type", "type", "kind")
    NUMBER_KEYS = ("id_number", "number", "card_number")
    CHECK_KEYS = ("check_ok", "check_valid", "checksum_ok", "valid_check")

    def __init__(self, devices: Mapping[str, Peripheral], *, journal: SessionJournal, outbox: EvidenceQueue,
                 kiosk: KioskConfig, light_tower: Buzzer | None = None) -> None:
        self.devices = devices
        self.journal = journal
        self.outbox = outbox
        self.kiosk = kiosk
        self.light_tower = light_tower

    def _device(self, name: str) -> Any:
        # Any: each step calls its own driver's methods (capture_still, print_receipt).
        device = self.devices.get(name)
        if device is None:
            raise DeviceMissing(f"no {name} configured")
        return device

    def card_fields(self, record: Any) -> CardFields:
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            raw = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        elif isinstance(record, dict):
            raw = dict(record)
        elif callable(getattr(record, "as_dict", None)):
            raw = dict(record.as_dict())
        else:
            raw = dict(vars(record))
        photo = next((raw.pop(k) for k in self.PHOTO_KEYS if k in raw), b"")
        number = next((raw[k] for k in self.NUMBER_KEYS if raw.get(k)), "")
        kind = next((raw[k] for k in self.TYPE_KEYS if raw.get(k) is not None), "resident")
        check = next((raw[k] for k in self.CHECK_KEYS if k in raw), True)
        check = check() if callable(check) else check
        return CardFields(fields={k: _plain(v) for k, v in raw.items() if not k.startswith("_")},
                          photo_wlt=bytearray(photo), id_number=str(_plain(number)),
                          card_type=str(_plain(kind)), check_ok=bool(check))

    async def capture_still(self) -> bytearray:
        camera = self._device("camera")
        still = await asyncio.to_thread(camera.capture_still)
        jpeg = bytearray(still.jpeg if hasattr(still, "jpeg") else still)
        return jpeg

    def printer_problem(self) -> PrinterProblem | None:
        """Why the printer cannot print now, from its last polled status; None when it can.

        ``paper_low`` still prints. ``unknown`` (not polled yet) counts as a
        problem: a purpose receipt is only promised when the printer said yes.
        """
        printer = self.devices.get("printer")
        if printer is None:
            return PrinterProblem(DeviceMissing.code, (), "no printer configured")
        status = printer.status()
        if status.state in (OK, DEGRADED):
            return None
        return PrinterProblem(status.code or f"hal.printer.{status.state}", tuple(sorted(status.alarms)),
                              status.detail or status.state)

    async def print_receipt(self, service: ServiceConfig, tx: dict[str, Any], *, language: str = "zh",
                            name_masked: str | None = None) -> None:
        printer = self._device("printer")
        lines = receipt_lines(self.kiosk, service, tx, language=language, name_masked=name_masked)
        await asyncio.to_thread(printer.print_receipt, lines)

    async def journal_record(self, tx: dict[str, Any]) -> dict[str, Any]:
        record = await self.journal.record(tx)
        return {"id": record.id, "seq": record.seq}

    async def enqueue(self, cls: str, topic: str, payload: bytes) -> None:
        await self.outbox.enqueue(cls, topic, payload)

    def trigger_scanner(self, on: bool) -> None:
        """Arm (or disarm) a scanner in serial-trigger mode; harmless for one that reads freely."""
        scanner: Any = self.devices.get("scanner")
        if scanner is None or not callable(getattr(scanner, "trigger", None)):
            return

        def send() -> None:
            try:
                scanner.trigger(on)
            except Exception as exc:  # noqa: BLE001 - the citizen can still scan a free-running scanner
                log.debug("scanner trigger failed: %s", exc)

        asyncio.get_running_loop().run_in_executor(None, send)

    def beep(self) -> None:
        tower = self.light_tower
        if tower is None:
            return
        def buzz(on: bool) -> None:
            try:
                tower.buzz(on)
            except Exception:  # noqa: BLE001 - a closed buzzer (shutdown) is no reason to fail
                pass

        buzz(True)
        asyncio.get_running_loop().call_later(0.3, buzz, False)


_RECEIPT_LABELS = {
    "zh": {"receipt": "回执号", "tx": "交易号", "time": "时间", "outlet": "网点", "name": "姓名", "id": "证件号",
           "paid": "支付", "waybill": "EMS 邮件号", "wechat": "微信支付", "alipay": "支付宝"},
    "en": {"receipt": "Receipt", "tx": "Transaction", "time": "Time", "outlet": "Outlet", "name": "Name",
           "id": "ID", "paid": "Paid", "waybill": "EMS waybill", "wechat": "WeChat Pay", "alipay": "Alipay"},
}


def receipt_lines(kiosk: Any, service: ServiceConfig, tx: dict[str, Any], *, language: str = "zh",
                  name_masked: str | None = None) -> list[str]:
    """What the receipt says, in the session's language: PII-free (masked name and number at most)."""
    label = _RECEIPT_LABELS.get(language, _RECEIPT_LABELS["zh"])
    sep = "：" if language == "zh" else ": "
    lines = [service.name_zh if language == "zh" else service.name_en, "",
             f"{label['receipt']}{sep}{tx.get('receipt') or '-'}",
             f"{label['tx']}{sep}{tx.get('id')}",
             f"{label['time']}{sep}{dt.datetime.now():%Y-%m-%d %H:%M}",
             f"{label['outlet']}{sep}{kiosk.site} ({kiosk.id})"]
    if name_masked:
        lines.append(f"{label['name']}{sep}{name_masked}")
    if tx.get("id_masked"):
        lines.append(f"{label['id']}{sep}{tx['id_masked']}")
    if tx.get("payment"):
        method = tx["payment"]["method"]
        lines.append(f"{label['paid']}{sep}{label.get(method, method)} {tx['payment']['ref_masked']}")
    if tx.get("waybill"):
        lines.append(f"{label['waybill']}{sep}{tx['waybill']}")
    return lines
