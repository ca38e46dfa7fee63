# SPDX-License-Identifier: Apache-2.0
"""The local device API the kiosk screen talks to (XFS4IoT-shaped WebSocket on loopback).

- ``server``: the listener (static UI files, token check, framing, flow control, cancellation)
- ``messages``: the XFS4IoT message shapes; ``service``: what a service is (commands, events)
- ``kiosk``: the ``Kiosk`` vendor service over the session engine
- ``devices``: CardReader, Printer, Camera, BarcodeReader, Lights, Auxiliaries over the peripherals
- ``dev``: the development panel's service (simulators, receipts), sim backend only
- ``static``, ``auth``: static files; the token file
- ``component``: builds the server from what it serves (the daemon calls it)
- ``contract``: the JSON Schemas in ``schemas/`` and the check the tests run on every message

The contract is ``docs/local-api.yaml``.
"""
