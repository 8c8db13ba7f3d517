"""Which backup generations retention may delete.

Every point inside the window [now - retention, now] must stay restorable. A
point at time T is restored from the newest generation that started at or
before T, so a generation is needed while it is the newest one started before
the window opened, or started inside the window. Older ones can go.
"""

from __future__ import annotations

from timemachine import layout


def doomed_generations(
    names: list[str], now_ms: float, retention_s: float, current: str | None
) -> list[str]:
    window_start = now_ms - retention_s * 1000
    dated = []
    for name in names:
        try:
            dated.append((layout.generation_time_ms(name), name))
        except layout.LayoutError:
            continue  # not ours: leave it alone
    dated.sort()
    keep_from = 0
    for i, (started, _) in enumerate(dated):
        if started <= window_start:
            keep_from = i  # the newest generation that began before the window
    return [name for _, name in dated[:keep_from] if name != current]
