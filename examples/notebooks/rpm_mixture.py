# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Recognition-parametrised models: a mixture against its Bayes classifier
#
# A recognition-parametrised model (RPM; Walker, Soulat, Yu & Sahani, AISTATS 2023) explains what
# J views x₁ … x_J of the same item have in common through a latent Z, using only recognition
# networks f_j(Z | x_j):
#
# $$p(X, Z) = p(Z) \prod_j \frac{f_j(Z\mid x_j)}{F_j(Z)}\, p_0(x_j),$$
#
# $$F_j(Z) = \frac1N \sum_n f_j(Z\mid x_j^{(n)}).$$
#
# No decoder is written. Here the data come from a model whose posterior we know exactly: a class
# z ∈ {1…4} and three 2-D views x_j | z ~ N(μ_{jz}, I). The Bayes posterior
# p(z | X) ∝ Π_j N(x_j; μ_{jz}, I) is the best any classifier can do; the RPM never sees the labels.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import linear_sum_assignment

from imnn import rpm

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
N_TRAIN = 20_000 if FULL else 3_000
K, J = 4, 3
rng = np.random.default_rng(0)
angles = 2 * np.pi * np.arange(K) / K
means = np.stack([1.5 * np.stack([np.cos(angles + 0.5 * j), np.sin(angles + 0.5 * j)], -1)[rng.permutation(K)]
                  for j in range(J)])  # fmt: skip


def sample(n, seed):
    r = np.random.default_rng(seed)
    z = r.integers(0, K, n)
    return z, tuple((means[j][z] + r.standard_normal((n, 2))).astype(np.float32) for j in range(J))


def bayes(views, used=range(J)):
    log_p = sum(-0.5 * ((views[j][:, None] - means[j][None]) ** 2).sum(-1) for j in used)
    p = np.exp(log_p - log_p.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


_, train = sample(N_TRAIN, 1)
_, validation = sample(1_000, 2)
labels, test = sample(5_000, 3)

# %% [markdown]
# One small MLP per view maps an item to the 4 logits of its factor. The objective of a categorical
# RPM is exact: the mean of log w(X) = log p(X) + J log N. Early stopping on held-out views keeps the
# best weights (their normaliser is the training one).

# %%
model = rpm.RPM(rpm.Categorical(K), [rpm.MLP((32, 32)) for _ in range(J)])
history = model.fit(train, steps=2_000, learning_rate=3e-3, validation=validation, patience=200)
posterior = np.asarray(model.posterior(test))
counts = np.zeros((K, K))
np.add.at(counts, (posterior.argmax(1), labels), 1)
rows, cols = linear_sum_assignment(-counts)  # the RPM's classes are unlabelled: match them
aligned = np.zeros_like(posterior)
aligned[:, cols] = posterior[:, rows]
exact = bayes(test)
print(f"Bayes classifier accuracy: {(exact.argmax(1) == labels).mean():.4f}")
print(f"one view alone (Bayes): {(bayes(test, [0]).argmax(1) == labels).mean():.4f}")
print(f"RPM accuracy after matching the classes: {(aligned.argmax(1) == labels).mean():.4f}")
print(f"mean total-variation distance to the Bayes posterior: {0.5 * np.abs(aligned - exact).sum(1).mean():.4f}")
print(f"held-out objective: {model.objective(test):.4f} nats per item")

# %%
shuffle = np.random.default_rng(4)
independent = tuple(v[shuffle.permutation(len(v))] for v in train)
control = rpm.RPM(rpm.Categorical(K), [rpm.MLP((32, 32)) for _ in range(J)])
control.fit(independent, steps=2_000, learning_rate=3e-3, progress=False,
            validation=tuple(v[shuffle.permutation(len(v))] for v in validation), patience=200)  # fmt: skip
shuffled_test = tuple(v[shuffle.permutation(len(v))] for v in test)
print(f"control, views shuffled across items: held-out objective {control.objective(shuffled_test):.4f} nats")

# %% [markdown]
# With independent views there is nothing to share and the objective falls to zero. The
# diagnostics say how far each normaliser F_j is from the prior (the assumption of the continuous
# latents' `q="use_theta"` bound) and how many classes the data use.

# %%
report = model.diagnostics(train)
print("KL(F_j ‖ p) per view:", np.round(report["prior_mismatch"], 5))
print(f"effective number of classes used: {report['latent_usage']['effective_classes']:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
confusion = np.zeros((K, K))
np.add.at(confusion, (labels, aligned.argmax(1)), 1)
axes[0].imshow(confusion / confusion.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
axes[0].set(title="RPM confusion matrix", xlabel="RPM class", ylabel="true class")
axes[1].scatter(exact.max(1), aligned[np.arange(len(labels)), exact.argmax(1)], s=2, alpha=0.3)
axes[1].plot([0.25, 1], [0.25, 1], "k--", lw=1)
axes[1].set(title="posterior of the Bayes class", xlabel="Bayes", ylabel="RPM")
axes[2].plot(history["objective"], label="training")
axes[2].plot(history["val_objective"], label="validation")
axes[2].set(title="objective (nats per item)", xlabel="step")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A continuous latent
#
# With z ~ N(0, 1) and views x_j = a_j z + 0.5 + ε_j in 4-D the posterior is Gaussian too. A
# Gaussian RPM's objective is a lower bound (the inner variational bound with q ∝ p^{1−J} Π_j f_j);
# for a 1-D latent the exact log w can be integrated on a grid, so the bound's gap is measured.
# The latent is identified only up to an affine map, so the posterior means are compared after one.
# The `"cache"` normaliser keeps every item's factor in a bank: minibatch steps with full-N F_j.

# %%
a = np.random.default_rng(10).normal(size=(J, 4)) * 0.7


def linear_views(n, seed):
    r = np.random.default_rng(seed)
    z = r.standard_normal(n)
    return tuple((a[j] * z[:, None] + 0.5 + r.standard_normal((n, 4))).astype(np.float32) for j in range(J))


views = linear_views(N_TRAIN // 3 * 2, 11)
gaussian = rpm.RPM(rpm.Gaussian(1), [rpm.Linear() for _ in range(J)], normaliser="cache")
gaussian.fit(views, steps=1_500, batch_size=200, learning_rate=3e-3, validation=linear_views(500, 12), patience=300)
held_out = linear_views(2_000, 13)
mean, cov = (np.asarray(x) for x in gaussian.posterior(held_out))
precision = 1 + (a**2).sum()
exact_mean = sum((held_out[j] - 0.5) @ a[j] for j in range(J)) / precision
design = np.stack([mean[:, 0], np.ones(len(mean))], 1)
coef, *_ = np.linalg.lstsq(design, exact_mean, rcond=None)
r2 = 1 - ((design @ coef - exact_mean) ** 2).sum() / ((exact_mean - exact_mean.mean()) ** 2).sum()
print(f"posterior means: R² = {r2:.4f} against the exact posterior mean (affine map)")
print(f"posterior sd / exact sd: {abs(coef[0]) * np.sqrt(cov[:, 0, 0]).mean() * np.sqrt(precision):.4f}")
report = gaussian.diagnostics(held_out)
print(f"bound {report['objective']:.4f} ≤ exact {report['exact_objective']:.4f} nats (gap {report['bound_gap']:.4f})")

# %%
plt.figure(figsize=(5, 4))
plt.scatter(exact_mean, design @ coef, s=2, alpha=0.3)
lim = np.abs(exact_mean).max()
plt.plot([-lim, lim], [-lim, lim], "k--", lw=1)
plt.xlabel("exact posterior mean")
plt.ylabel("RPM posterior mean (affine map)")
plt.show()
