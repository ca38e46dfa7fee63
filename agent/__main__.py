# SPDX-License-Identifier: Apache-2.0
import sys

from agent.cli import main

sys.exit(main())
