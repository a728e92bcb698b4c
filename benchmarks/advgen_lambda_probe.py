"""One advgen run on two circles (noise 0.01, seed 1, 10 x 100 steps) for a given lambda_rec and data scale:
a probe of how the reconstruction weight's effect depends on the data's scale (docs/results-circles.md).

    python benchmarks/advgen_lambda_probe.py LAMBDA_REC SCALE
"""
import sys, torch
torch.set_num_threads(1)
from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
lam, scale = float(sys.argv[1]), float(sys.argv[2])
data = DataSpec("circles", labels=8, options={"noise": 0.01, "factor": 0.5, "scale": scale})
spec = RunSpec("advgen", data, epochs=10, seed=1, config={"lambda_rec": lam, "steps_per_epoch": 100})
m = Trainer(spec, progress=False).fit()
print(f"advgen lambda_rec {lam} scale {scale} seed 1, 1000 steps: test error {m['test_error']:.2f}%")
