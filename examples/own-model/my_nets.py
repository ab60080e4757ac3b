"""A network of one's own for lp-ray: a 1-D CNN with GroupNorm-free residual blocks for MNIST-1D.
Declared by job.yaml beside it (`plugins: [my_nets]`); lp-ray imports nothing else of yours."""

from lp_ray.plugins import Field, register_model


@register_model("res1d", fields={"width": Field(int, 32, check=lambda w: w >= 4 or "must be at least 4")})
def res1d(num_classes, input_shape, width):
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv1d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Conv1d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm1d(width),
            )

        def forward(self, x):
            return (x + self.body(x)).relu()

    return nn.Sequential(
        nn.Unflatten(1, (1, input_shape[-1])),
        nn.Conv1d(1, width, 5, padding=2, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        Block(),
        nn.MaxPool1d(2),
        Block(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )
