# SPDX-License-Identifier: Apache-2.0
"""Stand-in for the rp2 ``neopixel`` module: logs each ring write (test rig only)."""

import machine


class NeoPixel:
    def __init__(self, pin, n):
        self.n = n
        self._px = [(0, 0, 0)] * n

    def __len__(self):
        return self.n

    def __setitem__(self, i, rgb):
        self._px[i] = rgb

    def __getitem__(self, i):
        return self._px[i]

    def fill(self, rgb):
        self._px = [rgb] * self.n

    def write(self):
        r = max(p[0] for p in self._px)
        g = max(p[1] for p in self._px)
        b = max(p[2] for p in self._px)
        machine._log("ring", r, g, b)
