"""Performance switches a user can turn on: mixed precision (--amp), torch.compile (--compile) and host-side
data (--no-resident-data). Each must train the same model (within the precision it trades away)."""
import torch

from ssl_ray.data import BatchStream, DataSpec, load_splits
from ssl_ray.engine.loop import RunSpec, Trainer

DATA = DataSpec("digits", labels=20, val_size=100)


def _run(method, **switches):
    spec = RunSpec(method, DATA, epochs=1, seed=1, config={"batch_size": 32, "steps_per_epoch": 4}, **switches)
    tr = Trainer(spec, progress=False)
    m = tr.fit()
    return tr, m


def test_amp_trains_in_bfloat16_and_keeps_float32_weights():
    ref, m_ref = _run("supervised")
    amp, m_amp = _run("supervised", amp=True)
    a, b = torch.tensor(m_amp["loss_lab"]), torch.tensor(m_ref["loss_lab"])
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)  # the same model, in bfloat16 arithmetic
    assert m_amp["loss_lab"] != m_ref["loss_lab"]  # autocast did change the maths
    assert all(p.dtype == torch.float32 for p in amp.method.net.parameters())
    # a two-player GAN runs under autocast too (its dynamics amplify rounding: only finiteness is checked)
    _, m_gan = _run("i2gan", amp=True)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in m_gan.items() if k.startswith("loss_"))


def test_compile_gives_the_same_training_and_checkpoint_keys():
    ref, m_ref = _run("supervised", eval_test=False)
    comp, m_comp = _run("supervised", eval_test=False, compile=True)
    torch.testing.assert_close(torch.tensor(m_comp["loss_lab"]), torch.tensor(m_ref["loss_lab"]), rtol=1e-4,
                               atol=1e-5)
    assert comp.method.state_dict()["modules"]["net"].keys() == ref.method.state_dict()["modules"]["net"].keys()


def test_host_side_batches_equal_resident_ones():
    splits = load_splits(DATA, seed=0)
    a = BatchStream(splits, 32, 0.25, seed=0, resident=True, second_unlabelled=True)
    b = BatchStream(splits, 32, 0.25, seed=0, resident=False, second_unlabelled=True)
    for _ in range(5):
        x, y = a.next(), b.next()
        for t, u in ((x.x_l, y.x_l), (x.y_l, y.y_l), (x.x_u, y.x_u), (x.x_u2, y.x_u2)):
            assert torch.equal(t, u)
