"""Classic attribution maps, for comparison with the rate-distortion methods.

The FW-RDE paper compares its maps with these; provex wraps the libraries that implement them
well (captum, zennit) behind ``provex.explain`` so every map comes back as an
:class:`~provex.Explanation` of the input's shape, batched and on the model's device.

| name              | what it computes                                              | library |
|-------------------|---------------------------------------------------------------|---------|
| `sensitivity`     | gradient of the target logit (`absolute=True`: magnitude)     | torch   |
| `smoothgrad`      | gradient averaged over Gaussian-noise copies (`square=True`)   | captum  |
| `guided-backprop` | gradient with negative signals stopped at each ReLU           | torch   |
| `lrp-alpha-beta`  | LRP, alpha=2 beta=1 on convolutions, epsilon on dense layers  | zennit  |
| `deep-taylor`     | z+ rule, z^B rule with data bounds on the first layer         | zennit  |
| `kernel-shap`     | KernelSHAP values of 2x2 pixel blocks (or superpixels)        | captum  |
| `lime`            | LIME ridge coefficients of 2x2 pixel blocks (or superpixels)  | captum  |

>>> import provex
>>> model = provex.models.load("mnist-cnn")
>>> x, _ = provex.data.samples("mnist")
>>> exp = provex.explain(model, x[:8], "lrp-alpha-beta")
>>> exp = provex.explain(model, x[:8], "kernel-shap", grid=4, n_samples=1000)

Each module's docstring gives the exact rule, its defaults and where they come from; the
tests check every map against a direct computation (autograd, hand-written rules, exact
Shapley values, least squares). Why LRP uses zennit rather than captum is in
:mod:`provex.baselines.lrp`; how LRP handles BatchNorm, residual sums, gates and attention
of any traceable model is in :mod:`provex.baselines.canonize`.
"""
