"""PyTorch peer for `make bench`: times the same networks ebm.h's bench runs.

  torch_peer.py langevin C HW NF B ACT   one Langevin step (forward + grad_x), ms
  torch_peer.py train C HW NF B K        one ML iteration: K Langevin steps on B
                                         samples, the loss backward on B data and
                                         B samples, an Adam step; ms
  torch_peer.py gen NZ NGF B             generator forward + grad wrt input and params, ms
Prints `torch_ms=<median of 5>` (after a warm-up). Threads: $THREADS (2)."""
import os, sys, time, statistics
import torch, torch.nn as nn

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)

def convnet(C, hw, nf, act):
    A = (lambda: nn.SiLU()) if act == "silu" else (lambda: nn.LeakyReLU(0.2))
    return nn.Sequential(nn.Conv2d(C, nf, 3, 1, 1), A(), nn.Conv2d(nf, 2 * nf, 4, 2, 1), A(),
                         nn.Conv2d(2 * nf, 4 * nf, 4, 2, 1), A(), nn.Conv2d(4 * nf, 8 * nf, 4, 2, 1), A(),
                         nn.Conv2d(8 * nf, 1, hw // 8, 1, 0))

def step(net, x, s=1.0, tau=0.01):
    x.requires_grad_(True)
    g, = torch.autograd.grad(net(x).sum(), [x])
    return (x.detach() + s * g + tau * torch.randn_like(x)).clamp_(-1, 1)

def median_ms(fn, reps=5):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)

kind = sys.argv[1]
if kind == "langevin":
    C, hw, nf, B = (int(a) for a in sys.argv[2:6]); act = sys.argv[6]
    net = convnet(C, hw, nf, act)
    x = torch.rand(B, C, hw, hw) * 2 - 1
    ms = median_ms(lambda: step(net, x.clone()))
elif kind == "train":
    C, hw, nf, B, K = (int(a) for a in sys.argv[2:7])
    net = convnet(C, hw, nf, "leaky")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    data = torch.rand(B, C, hw, hw) * 2 - 1
    def it():
        x = torch.rand(B, C, hw, hw) * 2 - 1
        for _ in range(K):
            x = step(net, x)
        loss = net(x).mean() - net(data).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    ms = median_ms(it, reps=3)
elif kind == "gen":
    nz, ngf, B = (int(a) for a in sys.argv[2:5])
    G = nn.Sequential(nn.ConvTranspose2d(nz, 2 * ngf, 7, 1, 0), nn.LeakyReLU(0.2), nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1),
                      nn.LeakyReLU(0.2), nn.ConvTranspose2d(ngf, 1, 4, 2, 1), nn.Tanh())
    z = torch.randn(B, nz, 1, 1)
    def it():
        zz = z.clone().requires_grad_(True)
        torch.autograd.grad(G(zz).square().sum(), [zz] + list(G.parameters()))
    ms = median_ms(it)
else:
    sys.exit("unknown case " + kind)
print(f"torch_ms={ms:.3f}")
