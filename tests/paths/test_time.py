"""The resolution shift: card 05 check 2."""

import torch

from flowforge.paths.time import shift_time


def test_shift_fixed_points_value_monotone_and_inverse():
    t = torch.linspace(0, 1, 1001)
    s = shift_time(t, 3.0)
    assert s[0] == 0 and s[-1] == 1
    assert (s.diff() > 0).all()
    # SD3's sigma: 0.5 -> 0.75 for shift 3; flowforge t = 1 - sigma: 0.5 -> 0.25.
    assert abs(shift_time(torch.tensor(0.5), 3.0).item() - 0.25) < 1e-12
    torch.testing.assert_close(shift_time(s, 1 / 3.0), t, atol=1e-7, rtol=0)
