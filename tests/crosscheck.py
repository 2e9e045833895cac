"""Recompute in PyTorch (float64) what ebm.h computed, and compare.

Run by `make crosscheck` after build/crosscheck has written its NPY files.
Needs Debian's python3-torch (and numpy); ebm.h itself never does."""
import sys, math
import numpy as np
import torch
import torch.nn as nn

d = sys.argv[1] if len(sys.argv) > 1 else "crosscheck_data"
torch.set_default_dtype(torch.float64)
failures = 0

def load(name):
    return torch.from_numpy(np.load(f"{d}/{name}.npy").astype(np.float64))

def convnet(C, hw, nf, act):
    A = (lambda: nn.LeakyReLU(0.2)) if act == "leaky" else (lambda: nn.SiLU())
    return nn.Sequential(nn.Conv2d(C, nf, 3, 1, 1), A(), nn.Conv2d(nf, 2 * nf, 4, 2, 1), A(),
                         nn.Conv2d(2 * nf, 4 * nf, 4, 2, 1), A(), nn.Conv2d(4 * nf, 8 * nf, 4, 2, 1), A(),
                         nn.Conv2d(8 * nf, 1, hw // 8, 1, 0))

def set_flat(net, flat):
    i = 0
    for p in net.parameters():
        n = p.numel()
        p.data.copy_(flat[i:i + n].view_as(p))
        i += n
    assert i == flat.numel(), (i, flat.numel())

def rel(a, b):
    return (torch.linalg.norm((a - b).flatten()) / torch.linalg.norm(b.flatten())).item()

def report(what, err, tol):
    global failures
    ok = err <= tol
    failures += not ok
    print(f"crosscheck {what} rel_err={err:.3e} tol={tol:.0e} {'ok' if ok else 'FAIL'}")

for tag, C, hw, nf, act in [("leaky28", 1, 28, 16, "leaky"), ("silu28", 1, 28, 16, "silu"), ("silu32", 3, 32, 8, "silu")]:
    net = convnet(C, hw, nf, act)
    set_flat(net, load(f"{tag}_params"))
    x = load(f"{tag}_x").requires_grad_(True)
    v = load(f"{tag}_v")
    f = net(x).flatten()
    gx, = torch.autograd.grad(f.sum(), [x], create_graph=True)
    hv, = torch.autograd.grad((gx * v).sum(), [x])
    net.zero_grad()
    net(x).sum().backward()
    gp = torch.cat([p.grad.flatten() for p in net.parameters()])
    report(f"{tag} energies", rel(load(f"{tag}_f"), f.detach()), 1e-5)
    report(f"{tag} grad_x", rel(load(f"{tag}_grad_x"), gx.detach()), 1e-5)
    report(f"{tag} grad_theta", rel(load(f"{tag}_grad_params"), gp), 1e-5)
    if act == "silu":  # with LeakyReLU, Hv is exactly 0: only the smooth nets say something
        report(f"{tag} hessian_vector", rel(load(f"{tag}_hvp"), hv), 1e-5)

# Initialisation: per parameter tensor, compare ebm.h's fresh values with a
# fresh PyTorch module's: the same bound (max |w|), and mean squares that agree
# within 5 standard errors of their difference (each ~ b^2/3, Var(w^2) = 4b^4/45).
torch.manual_seed(0)
G = nn.Sequential(nn.ConvTranspose2d(100, 128, 7, 1, 0), nn.LeakyReLU(0.2), nn.ConvTranspose2d(128, 64, 4, 2, 1),
                  nn.LeakyReLU(0.2), nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
P = nn.Sequential(nn.Linear(100, 200), nn.LeakyReLU(0.2), nn.Linear(200, 200), nn.LeakyReLU(0.2), nn.Linear(200, 1))
for tag, net in [("convnet32", convnet(3, 32, 64, "leaky")), ("generator28", G), ("prior", P)]:
    ours = load(f"init_{tag}")
    i = 0
    worst_z, worst_max = 0.0, 0.0
    for name, p in net.named_parameters():
        n = p.numel()
        a, b = ours[i:i + n], p.detach().flatten().double()
        i += n
        if n < 2:
            continue
        ma, mb = (a * a).mean().item(), (b * b).mean().item()
        bound = b.abs().max().item()
        se = math.sqrt(2 * 4 * bound ** 4 / 45 / n)
        worst_z = max(worst_z, abs(ma - mb) / se)
        worst_max = max(worst_max, abs(a.abs().max().item() - bound) / bound)
    global_ok = i == ours.numel()
    print(f"crosscheck init_{tag} params={i} worst_mean_square_z={worst_z:.2f} worst_bound_rel={worst_max:.3e}")
    if not global_ok or worst_z > 5 or worst_max > 0.05:
        failures += 1
        print(f"crosscheck init_{tag} FAIL")

print(f"torch={torch.__version__}")
print(f"crosscheck_failures={failures}")
sys.exit(1 if failures else 0)
