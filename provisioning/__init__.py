# SPDX-License-Identifier: Apache-2.0
"""kiosk-provision: the installer's tool (see docs/installing.md).

Public API:

    from provisioning.steps import Answers, Reporter, provision
    from provisioning.layout import Layout
    from provisioning.decommission import decommission
    result = provision(Answers(kiosk_id="k-0001", fleet="north", site="Outlet 37",
                               mqtt_url="mqtts://broker.example:8883", bundle=Path("k-0001.bundle.pem")),
                       Layout(Path("/tmp/stage")), Reporter())
    decommission(Layout(Path("/tmp/stage")))

``provisioning.keys`` (device keys, CSR, bundle checks, ``diagnose_certificate``),
``provisioning.claim`` (``enrol_over_mqtt``), ``provisioning.slip`` (the
commissioning slip), ``provisioning.errors`` (``ProvisionError`` and its
subclasses, each with a stable ``code``).
"""
