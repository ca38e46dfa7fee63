# SPDX-License-Identifier: Apache-2.0
"""Fleet commands and remote configuration: verification, nonces, handlers, audit."""
