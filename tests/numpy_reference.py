"""The xRDA and RDA update rules written out in NumPy (float64), leaf by leaf, for the tests to check against."""

import math

import numpy as np


def cosine_lr(s0, total, n):
  k = min(n + 1, total)
  return 0.5 * s0 * (1 + math.cos(math.pi * k / total))


def cosine_alpha(total, n):
  k = min(n + 1, total)
  return 0.5 * (1 - math.cos(math.pi * k / total))


def magnitude(theta, structure):
  """mag(θ) and the scale c of the adaptive log-l1 weights, with the kernel written as explicit loops."""
  if theta.ndim == 4 and structure == "kernel":
    h, w, i, o = theta.shape
    out = np.zeros((1, 1, i, o))
    for a in range(i):
      for b in range(o):
        out[0, 0, a, b] = np.abs(theta[:, :, a, b]).sum() / (h * w)
    return out, math.sqrt(h * w)
  if theta.ndim == 4 and structure == "channel":
    h, w, i, o = theta.shape
    out = np.zeros((1, 1, 1, o))
    for b in range(o):
      out[0, 0, 0, b] = np.abs(theta[:, :, :, b]).sum() / (h * w * i)
    return out, math.sqrt(h * w * i)
  return np.abs(theta), 1.0


class XRDA:
  """One leaf of xRDA with momentum and adaptive log-l1, exactly as that paper writes it."""

  def __init__(self, theta0, structure="unstructured"):
    self.structure = structure
    self.z = np.array(theta0, np.float64)
    self.v = np.zeros_like(self.z)
    self.r = np.zeros_like(magnitude(self.z, structure)[0])
    self.B = np.zeros_like(self.r)

  def step(self, theta, g, *, s, alpha, lam, wd, T, Tb, F):
    z, B = self.dual(theta, g, s=s, alpha=alpha, wd=wd, T=T, Tb=Tb, F=F)
    return soft(z, lam * B)

  def dual(self, theta, g, *, s, alpha, wd, T, Tb, F):
    """The step up to the prox: the new dual average z and threshold scale B."""
    theta = np.asarray(theta, np.float64)
    g = np.asarray(g, np.float64) + wd * theta
    mu_b = math.exp(-s / Tb)
    mag, c = magnitude(theta, self.structure)
    self.r = mu_b * self.r + (1 - mu_b) * mag
    if theta.ndim >= 2 and self.r.max() > 0:
      w = c * F / (1 + (F - 1) * self.r / self.r.max())
    else:
      w = np.zeros_like(self.r)
    self.B = alpha * self.B + s * w
    self.z = alpha * self.z + (1 - alpha) * theta
    mu = math.exp(-s / T)
    self.v = mu * self.v + (1 - mu) * g
    self.z = self.z - s * self.v
    return self.z, self.B


def soft(z, t):
  return np.sign(z) * np.maximum(np.abs(z) - t, 0)


def target_strength(zs, scales, sparsity):
  """The sparsity target's exact strength over leaves ``zs`` with threshold scales ``scales``:
  the k-th smallest |z| / t (k = floor(S N)), raised by 2^-20 as the library does."""
  ratios = []
  for z, t in zip(zs, scales):
    a = np.abs(z)
    t = np.broadcast_to(t, a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
      ratios.append(np.where(a == 0, 0.0, a / t).ravel())
  ratios = np.sort(np.concatenate(ratios))
  k = math.floor(sparsity * ratios.size)
  return 0.0 if k == 0 else ratios[k - 1] * (1 + 2.0 ** -20)


def feedback_strength(lam, density, target_density, size, gain):
  """λ moved by the density d the params have: λ (d / d*)^gain, the factor within [1/4, 4]."""
  factor = (max(density, 1 / size) / max(target_density, 1 / size)) ** gain
  return lam * min(max(factor, 0.25), 4.0)


def rda_closed_form(theta0, grads, gamma, lam):
  """Xiao's RDA: θ_{n+1} = soft(θ_0 − G_n/β_n, λ n/β_n), β_n = γ √n, for every n."""
  out, G = [], np.zeros_like(theta0, dtype=np.float64)
  for n, g in enumerate(grads, start=1):
    G = G + g
    beta = gamma * math.sqrt(n)
    z = theta0 - G / beta
    out.append(np.sign(z) * np.maximum(np.abs(z) - lam * n / beta, 0))
  return out
