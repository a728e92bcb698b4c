import sys, torch
torch.set_num_threads(1)
from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
lam, scale = float(sys.argv[1]), float(sys.argv[2])
spec = RunSpec("advgen", DataSpec("circles", labels=8, options={"noise": 0.01, "factor": 0.5, "scale": scale}), epochs=10,
               seed=1, config={"lambda_rec": lam, "steps_per_epoch": 100})
m = Trainer(spec, progress=False).fit()
print(f"advgen lambda_rec {lam} scale {scale} seed 1, 1000 steps: test error {m['test_error']:.2f}%")
