# SPDX-License-Identifier: Apache-2.0
"""Pure codecs over bytes, one module per wire protocol.

Nothing here does I/O or keeps time; every parser fed arbitrary bytes raises
only its own ``ProtocolError`` subclass (``SamProtocolError``,
``EscposError``, ``ScannerProtocolError``), each with a stable ``code``.

    from hal.protocols import sam
    sam.encode_command(sam.FIND_CARD).hex()   # 'aaaaaa96690003200122'
"""

from __future__ import annotations

__all__ = ["escpos", "sam", "scanner"]
