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
# # Peer-supervised digit recognition
#
# The 8×8 handwritten digits bundled with scikit-learn (1 797 images). Each item is a pair of two
# **different** images of the same digit: the only supervision is that the two share something. An
# RPM with a 10-class latent and one small network per view must discover what: it never sees a
# label. We report its clustering accuracy on pairs of images it has never seen (classes matched to
# the labels by the Hungarian algorithm), against k-means on the pixels and against a control where
# the pairs are random images, which share nothing.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from imnn import rpm

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
COPIES, STEPS = (10, 6_000) if FULL else (4, 3_000)  # partners drawn per training image; fit steps
digits = load_digits()
images, labels = (digits.data / 16).astype(np.float32), digits.target
order = np.random.default_rng(0).permutation(len(labels))
test_images, validation_images, train_images = order[:500], order[500:750], order[750:]  # disjoint images


def same_class_pairs(indices, copies, seed):
    """For each image of ``indices`` (``copies`` times), a different image of the same class."""
    r = np.random.default_rng(seed)
    first = np.tile(indices, copies)
    second = np.array([r.choice(indices[(labels[indices] == labels[i]) & (indices != i)]) for i in first])
    return first, (images[first], images[second])


def matched_accuracy(predicted, truth):
    counts = np.zeros((10, 10))
    np.add.at(counts, (predicted, truth), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(truth), dict(zip(rows, cols))


_, train = same_class_pairs(train_images, COPIES, 1)
_, validation = same_class_pairs(validation_images, 2, 4)
first, test = same_class_pairs(test_images, 1, 2)
print(f"{len(train[0])} training pairs, {len(test[0])} test pairs")

# %% [markdown]
# A categorical RPM's objective is exact: the mean log w, here at most log 10 = 2.30 nats when the
# two images of a pair always share their class and the classes are equally common. With ten
# classes the full normaliser (every training pair's factors, every step) is cheap; early stopping
# on pairs of other images keeps the best weights, and a small network (16 hidden units) overfits
# the 1 047 training images less. Like any clustering, the fit can
# settle in a local optimum (two digits merged, another split), so we fit from five initialisations
# and keep the one with the best validation objective: a likelihood, chosen without the labels.

# %%
restarts = []
for seed in range(5):
    model = rpm.RPM(rpm.Categorical(10), [rpm.MLP((16,)) for _ in range(2)], key=jax.random.key(seed))
    history = model.fit(train, steps=STEPS, learning_rate=3e-3, validation=validation, patience=500, progress=False)
    restarts.append((np.nanmax(history["val_objective"]), seed, model, history))
    print(f"initialisation {seed}: best validation objective {restarts[-1][0]:.4f} nats")
_, chosen, model, history = max(restarts, key=lambda restart: restart[0])
posterior = np.asarray(model.posterior(test))
accuracy, to_label = matched_accuracy(posterior.argmax(1), labels[first])
print(f"RPM clustering accuracy: {accuracy:.4f}")
print(f"chosen initialisation: {chosen}")
print(f"held-out objective: {model.objective(test):.4f} nats per pair (log 10 = {np.log(10):.4f})")
kmeans = KMeans(10, n_init=10, random_state=0).fit(images[train_images])
print(f"k-means accuracy: {matched_accuracy(kmeans.predict(images[test_images]), labels[test_images])[0]:.4f}")
print("chance: 0.1")

# %% [markdown]
# The control: pairs of random images (of any class) share nothing, so the objective must fall to
# ≈ 0 and the classes found carry little about the digit.

# %%
shuffle = np.random.default_rng(3)
random_pairs = lambda views: (views[0], views[1][shuffle.permutation(len(views[1]))])
control = rpm.RPM(rpm.Categorical(10), [rpm.MLP((16,)) for _ in range(2)])
control.fit(random_pairs(train), steps=STEPS, learning_rate=3e-3, progress=False,
            validation=random_pairs(validation), patience=300)  # fmt: skip
shuffled_test = random_pairs(test)
print(f"control, random pairs: held-out objective {control.objective(shuffled_test):.4f} nats")
control_accuracy, _ = matched_accuracy(np.asarray(control.posterior(shuffled_test)).argmax(1), labels[first])
print(f"control, random pairs: clustering accuracy {control_accuracy:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
confusion = np.zeros((10, 10))
np.add.at(confusion, (labels[first], [to_label[k] for k in posterior.argmax(1)]), 1)
axes[0].imshow(confusion, cmap="Blues")
axes[0].set(title="test pairs: digit vs matched RPM class", xlabel="RPM class", ylabel="digit",
            xticks=range(10), yticks=range(10))  # fmt: skip
axes[1].plot(history["objective"], label="training")
axes[1].plot(history["val_objective"], label="validation")
axes[1].axhline(np.log(10), color="k", ls="--", lw=1, label="log 10")
axes[1].set(title="objective (nats per pair)", xlabel="step")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What each class holds: the mean of the training images the RPM assigns to it.

# %%
train_classes = np.asarray(model.posterior(train)).argmax(1)
fig, axes = plt.subplots(1, 10, figsize=(14, 1.8))
for k, ax in enumerate(axes):
    ax.imshow(train[0][train_classes == k].mean(0).reshape(8, 8), cmap="Greys")
    ax.set(title=f"class {k}", xticks=[], yticks=[])
plt.show()
