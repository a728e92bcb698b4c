"""An independent PyTorch port of openai/improved-gan's MNIST feature-matching script
(mnist_svhn_cifar10/train_mnist_feature_matching.py with the layers of its nn.py), written from the reference,
importing nothing from ssl_ray: the yardstick `ssl-ray train improvedgan` is compared against
(docs/results-improvedgan.md, "Parity with the reference"; benchmarks/improvedgan_parity.py writes the split).

Term by term as the reference: D = input noise 0.3, five weight-normed dense layers 1000-500-250-250-250 (ReLU,
noise 0.5 after each), a weight-normed dense layer of 10 logits; directions theta ~ N(0, 0.1^2), scales 1 then
set by the data-dependent init on 500 training images (one forward pass, noise on) and fixed in the hidden
layers, trained in the output layer; biases 0 then set by that init. G: z ~ U(0, 1)^100, two dense 500 layers
(Glorot uniform, no bias) with batch norm without scale (batch statistics, eps 1e-6) and softplus, a dense 784
layer with l2-normalised columns (scale 1, trained; bias 0) and a sigmoid. Losses: L_lab (cross-entropy) +
L_unl; G: mean squared difference of the means of the last hidden layer's outputs (before its noise, noise on
in the layers below) on a second unlabelled batch and on generated samples. The reference's own Adam (eps 1e-8
inside the square root), beta1 0.5, lr 3e-3; batches of 100 labelled (a permutation of the 100 labels) + 100
unlabelled + 100 for G, the pools permuted every pass; the test error with the reference's average
(a <- a + 1e-4 (p - a), a starting at 0, over D's trained parameters), and two more reported beside it: the
warm-up average ssl-ray uses (decay min(0.9999, (1 + n)/(10 + n)), starting at the weights after the init) and
the raw weights. Switches for bisecting: --adam torch (torch.optim.Adam's eps outside the root), --init-data
first-batch and --stream one (ssl-ray's data-init sample and batch stream). I2GAN's two changes (slides;
ssl_ray/methods/i2gan.py): --tau 2 --n-fake 200 --fm-norm l1 is `ssl-ray train i2gan`'s defaults.

  python benchmarks/improvedgan_port.py --data DIR/split_1.npz --seed 1 --steps 2100 --out port_1.json
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help=".npz with x_lab, y_lab, x_unl, x_test, y_test (uint8 images)")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--steps", type=int, default=2100)
p.add_argument("--eval-every", type=int, default=105)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--adam", choices=("reference", "torch"), default="reference")
p.add_argument("--tau", type=float, default=1.0, help="I2GAN (a): L_unl scaled by tau in D's loss (1 = ImprovedGAN)")
p.add_argument("--n-fake", type=int, default=0, help="I2GAN (b): N' generated samples in G's feature matching (0 = "
               "the batch, ImprovedGAN)")
p.add_argument("--fm-norm", choices=("l2", "l1"), default="l2", help="G's loss: l2 = the reference's mean squared "
               "difference, l1 = the I2GAN slides' L1 norm (as a mean absolute difference)")
p.add_argument("--init-data", choices=("reference", "first-batch"), default="reference", help="the data-dependent "
               "init's sample: reference = 500 unlabelled images; first-batch = the 100 labelled + 100 unlabelled "
               "images, ssl-ray's first batch")
p.add_argument("--stream", choices=("two", "one"), default="two", help="D's unlabelled batch and G's real batch: "
               "two = two permutations of the pool per pass (the reference); one = both cut in turn from one endless "
               "permutation stream (ssl-ray's BatchStream)")
p.add_argument("--out", default=None)
args = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(args.seed)
rng = np.random.RandomState(args.seed)
d = np.load(args.data)
flat = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
x_lab, y_lab, x_unl = flat(d["x_lab"]), torch.from_numpy(d["y_lab"].astype(np.int64)), flat(d["x_unl"])
x_test, y_test = flat(d["x_test"]), torch.from_numpy(d["y_test"].astype(np.int64))
B = 100


def param(t, trainable=True):
    return t.clone().requires_grad_(trainable)


def glorot(n_in, n_out):
    lim = (6.0 / (n_in + n_out)) ** 0.5
    return (torch.rand(n_in, n_out) * 2 - 1) * lim


# ---- D: nn.py's DenseLayer (theta, weight_scale, b); GaussianNoiseLayer ----
sizes = [784, 1000, 500, 250, 250, 250, 10]
D = [dict(theta=param(torch.randn(i, o) * 0.1), scale=param(torch.ones(o), trainable=(k == 5)),
          b=param(torch.zeros(o))) for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]))]
d_params = [t for layer in D for t in layer.values() if t.requires_grad]


def disc(x, layers=D, noise=True, init=False, features=False):
    h = x + 0.3 * torch.randn_like(x) if noise else x
    for k, layer in enumerate(layers):
        theta = layer["theta"]
        a = h @ (theta * (layer["scale"] / theta.pow(2).sum(0).sqrt()))
        if init:  # data-dependent init: unit-variance outputs; scale /= std, b = -mean / std
            m = a.mean(0)
            a = a - m
            std = a.pow(2).mean(0).sqrt()
            a = a / std
            with torch.no_grad():
                layer["scale"].div_(std)
                layer["b"].copy_(-m / std)
        else:
            a = a + layer["b"]
        if k == len(layers) - 1:
            return a
        h = F.relu(a)
        if features and k == len(layers) - 2:
            return h  # layers[-3]: the last dense layer's output, before its noise layer
        if noise:
            h = h + 0.5 * torch.randn_like(h)


# ---- G: batch_norm(DenseLayer, g=None) x 2, l2normalize(DenseLayer) ----
G = dict(w1=param(glorot(100, 500)), b1=param(torch.zeros(500)), w2=param(glorot(500, 500)),
         b2=param(torch.zeros(500)), w3=param(glorot(500, 784)), s3=param(torch.ones(784)), b3=param(torch.zeros(784)))


def bn(a):
    a = a - a.mean(0)
    return a / (1e-6 + a.pow(2).mean(0)).sqrt()


def gen(n):
    h = F.softplus(bn(torch.rand(n, 100) @ G["w1"]) + G["b1"])
    h = F.softplus(bn(h @ G["w2"]) + G["b2"])
    w3 = G["w3"] * (G["s3"] / (1e-6 + G["w3"].pow(2).sum(0)).sqrt())
    return torch.sigmoid(h @ w3 + G["b3"])


# ---- nn.py's adam_updates ----
class Adam:
    def __init__(self, params, lr, mom1=0.5, mom2=0.999):
        self.params, self.lr, self.m1, self.m2, self.t = params, lr, mom1, mom2, 1
        self.v = [torch.zeros_like(q) for q in params]
        self.mg = [torch.zeros_like(q) for q in params]

    @torch.no_grad()
    def step(self, loss):
        grads = torch.autograd.grad(loss, self.params)
        for q, g, v, mg in zip(self.params, grads, self.v, self.mg):
            v.mul_(self.m1).add_((1 - self.m1) * g)
            mg.mul_(self.m2).add_((1 - self.m2) * g * g)
            v_hat, mg_hat = v / (1 - self.m1 ** self.t), mg / (1 - self.m2 ** self.t)
            q.sub_(self.lr * v_hat / (mg_hat + 1e-8).sqrt())
        self.t += 1


def make_opt(params):
    if args.adam == "reference":
        return Adam(params, args.lr)
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.5, 0.999))

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.step_loss = step
    return opt


def opt_step(opt, loss):
    (opt.step if isinstance(opt, Adam) else opt.step_loss)(loss)


lse = torch.logsumexp
with torch.no_grad():
    if args.init_data == "reference":
        disc(x_unl[rng.permutation(len(x_unl))[:500]], init=True)  # init_param(trainx[:500])
    else:
        disc(torch.cat([x_lab, x_unl[rng.permutation(len(x_unl))[:B]]]), init=True)
opt_d, opt_g = make_opt(d_params), make_opt([G[k] for k in G])
avg_ref = [torch.zeros_like(q) for q in d_params]            # the reference's average, from 0
avg_wu, n_wu = [q.detach().clone() for q in d_params], 0     # ssl-ray's warm-up average, from the init


@torch.no_grad()
def test_error(values):
    layers = [dict(layer) for layer in D]
    it = iter(values)
    for layer in layers:
        for k, t in layer.items():
            if t.requires_grad:
                layer[k] = next(it)
    return 100.0 * float((disc(x_test, layers, noise=False).argmax(1) != y_test).float().mean())


log, step, t0 = [], 0, time.time()
n_batches = len(x_unl) // B
while step < args.steps:
    lab_order = np.concatenate([rng.permutation(len(x_lab)) for _ in range(len(x_unl) // len(x_lab))])
    if args.stream == "two":
        unl, unl2 = x_unl[rng.permutation(len(x_unl))], x_unl[rng.permutation(len(x_unl))]
    else:  # one endless stream, D's batch then G's: 2 passes' worth of permutations cut in turn
        cut = x_unl[np.concatenate([rng.permutation(len(x_unl)) for _ in range(2)])].view(-1, 2, B, x_unl.shape[1])
        unl, unl2 = cut[:, 0].reshape(-1, x_unl.shape[1]), cut[:, 1].reshape(-1, x_unl.shape[1])
    for t in range(n_batches):
        if step >= args.steps:
            break
        idx = lab_order[t * B:(t + 1) * B]
        with torch.no_grad():
            fake = gen(B)
        out_lab, out_unl, out_fake = disc(x_lab[idx]), disc(unl[t * B:(t + 1) * B]), disc(fake)
        l_unl, l_fake = lse(out_unl, 1), lse(out_fake, 1)
        loss_lab = -out_lab.gather(1, y_lab[idx][:, None]).mean() + lse(out_lab, 1).mean()
        loss_unl = args.tau * (-0.5 * l_unl.mean() + 0.5 * F.softplus(l_unl).mean() + 0.5 * F.softplus(l_fake).mean())
        with torch.no_grad():
            for a, q in zip(avg_ref, d_params):  # theano's updates read p before this step's update
                a.add_(1e-4 * (q - a))
        opt_step(opt_d, loss_lab + loss_unl)
        with torch.no_grad():
            dec = min(0.9999, (1 + n_wu) / (10 + n_wu))
            for a, q in zip(avg_wu, d_params):
                a.lerp_(q, 1 - dec)
            n_wu += 1
            f_real = disc(unl2[t * B:(t + 1) * B], features=True).mean(0)
        f_fake = disc(gen(args.n_fake or B), features=True).mean(0)
        diff = f_fake - f_real
        opt_step(opt_g, diff.abs().mean() if args.fm_norm == "l1" else diff.pow(2).mean())
        for q in d_params:
            q.grad = None
        step += 1
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "loss_lab": float(loss_lab.detach()), "loss_unl": float(loss_unl.detach()),
                   "test_error_ema_reference": test_error(avg_ref), "test_error_ema_warmup": test_error(avg_wu),
                   "test_error_raw": test_error([q.detach() for q in d_params]), "seconds": time.time() - t0}
            log.append(row)
            print(json.dumps(row), flush=True)
result = {"seed": args.seed, "steps": step, "data": args.data, "adam": args.adam, "lr": args.lr, "tau": args.tau,
          "n_fake": args.n_fake, "fm_norm": args.fm_norm, "init_data": args.init_data, "stream": args.stream, "log": log,
          **{k: v for k, v in log[-1].items() if k.startswith("test_error")}}
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
