# SPDX-License-Identifier: Apache-2.0
"""Simulation and development: simulated citizens, simulator control, a private broker, `make run`."""
