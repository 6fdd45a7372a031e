import numpy as np
import pytest

from steerlit.intervene.schedules import (
    Constant,
    EveryK,
    ExpDecay,
    LinearRamp,
    Window,
    make_schedule,
    schedule_name,
)


def test_values():
    np.testing.assert_array_equal(Constant().values(3), [1, 1, 1])
    np.testing.assert_allclose(ExpDecay(rate=np.log(2), floor=0.3).values(4), [1, 0.5, 0.3, 0.3])
    np.testing.assert_allclose(LinearRamp(start=1, end=3).values(5), [0, 0, 0.5, 1, 1])
    np.testing.assert_array_equal(Window(start=1, stop=3).values(5), [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(EveryK(k=3, offset=1).values(8), [0, 1, 0, 0, 1, 0, 0, 1])


def test_make_schedule_from_config():
    assert make_schedule(None) == Constant()
    assert make_schedule("window") == Window()
    assert make_schedule({"kind": "exp_decay", "rate": 0.1}) == ExpDecay(rate=0.1)
    assert schedule_name(ExpDecay(rate=0.1, floor=0.2)) == "exp_decay(rate=0.1,floor=0.2)"
    with pytest.raises(ValueError, match="Unknown schedule"):
        make_schedule("sine")
    with pytest.raises(ValueError, match="it takes"):
        make_schedule({"kind": "window", "begin": 3})
    with pytest.raises(ValueError, match="k >= 1"):
        make_schedule({"kind": "every_k", "k": 0})
