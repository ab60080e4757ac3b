"""`lp-ray import` on small files built in the sources' own formats: the Lottery Pools paper code's
checkpoints (torch.nn.utils.prune pairs, an input-normalization layer, optimizer and scheduler state)
and OpenLTH lottery levels (mask.pth, model_ep<E>_it<I>.pth). The sources' own architectures are
re-created here in their naming, so an imported ticket is checked against the same weights run the
way the source ran them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import cifar_archive, cli, one_error_line, write_yaml

from lp_ray.data.cifar import MEAN, STD
from lp_ray.data.loading import load_data
from lp_ray.models import build_model
from lp_ray.spec_loading import job_from_dict
from lp_ray.store import RunDir, decode_weights
from lp_ray.training import accuracy

pytestmark = pytest.mark.e2e


def job_yaml(tmp_path, model: str, dataset: str = "cifar10") -> tuple:
    archive = cifar_archive(tmp_path / f"{dataset}.tar.gz", n_per_batch=20, dataset=dataset)
    spec = {
        "name": f"imported-{model}",
        "data": {"dataset": dataset, "path": str(archive), "augment": False},
        "model": {"name": model},
        "train": {"epochs": 10, "batch_size": 16, "lr_drops": [5]},
        "imp": {"rounds": 3, "rewind_epoch": 1},
    }
    return write_yaml(tmp_path / f"{model}-{dataset}.yaml", spec), spec


# --- the paper code's CIFAR ResNet-18 (torchvision naming, normalization inside) ---------------------


class PaperBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PaperResNet18(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("normalize_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("normalize_std", torch.tensor(std).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512), start=1):
            blocks = [PaperBlock(cin, cout, 1 if i == 1 else 2), PaperBlock(cout, cout, 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(512, 10)

    def forward(self, raw):  # raw pixels in [0, 1]: the model normalizes them itself
        x = (raw - self.normalize_mean) / self.normalize_std
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def paper_state(self):
        """As the paper's code saves it: normalize.mean/std, prune pairs for pruned convs."""
        sd = {k.replace("normalize_", "normalize."): v for k, v in self.state_dict().items()}
        return sd


def paper_checkpoints(folder, rounds=3):
    """<r>model_SA_best.pth.tar for r = 0 (dense) and pruned rounds, whose weight_orig keeps values at
    pruned positions (as torch.nn.utils.prune does), saved with optimizer and scheduler state."""
    folder.mkdir()
    nets = []
    for r in range(rounds):
        torch.manual_seed(r)
        net = PaperResNet18(MEAN["cifar10"], STD["cifar10"]).eval()
        for m in net.modules():  # BN statistics that are not the defaults
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        sd = net.paper_state()
        if r > 0:
            g = torch.Generator().manual_seed(100 + r)
            for k in [k for k in sd if k.endswith("weight") and sd[k].dim() == 4]:
                mask = (torch.rand(sd[k].shape, generator=g) > 0.2 * r).float()
                sd[k + "_orig"], sd[k + "_mask"] = sd.pop(k), mask
                with torch.no_grad():  # the network the paper's code runs: weight = orig * mask
                    dict(net.named_parameters())[k].mul_(mask)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [91, 136])
        torch.save(
            {
                "state_dict": sd,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "best_sa": 50.0,
                "epoch": 3,
            },
            folder / f"{r}model_SA_best.pth.tar",
        )
        nets.append(net)
    return nets


def test_paper_checkpoints_import_and_compute_what_the_paper_code_computes(tmp_path, tracking_uri):
    path, spec = job_yaml(tmp_path, "cifar_resnet18")
    nets = paper_checkpoints(tmp_path / "paper")
    cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(tmp_path / "runs")})
    args = [
        "import",
        str(tmp_path / "paper"),
        "--format",
        "lottery-pools",
        "--job",
        str(path),
        "--cluster",
        str(cluster),
    ]
    proc = cli(*args, "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = (tmp_path / "runs").glob("imported-cifar_resnet18-import-*")
    job = job_from_dict(spec)
    data = load_data(job, RunDir(str(run)))
    raw_test = data.test.x * torch.tensor(STD["cifar10"]).view(1, 3, 1, 1) + torch.tensor(MEAN["cifar10"]).view(
        1, 3, 1, 1
    )
    for r, net in enumerate(nets):
        state, mask = decode_weights((run / "rounds" / f"round_{r:02d}" / "ticket.safetensors").read_bytes(), "t")
        for k, m in mask.items():
            assert torch.all(state[k][m == 0] == 0)  # pruned weights exactly zero
        model = build_model(job.model, 10, (3, 32, 32)).eval()
        model.load_state_dict(state)
        with torch.no_grad():  # the same function: lp-ray's model on normalized data = the paper's on raw pixels
            assert torch.allclose(model(data.test.x), net(raw_test), atol=1e-4)
        meta = json.loads((run / "rounds" / f"round_{r:02d}" / "meta.json").read_text())
        assert meta["test_acc"] == accuracy(model, data.test, torch.arange(len(data.test)))
        assert meta["density"] == pytest.approx(
            sum(m.sum().item() for m in mask.values()) / sum(m.numel() for m in mask.values())
        )
    assert json.loads((run / "import.json").read_text())["format"] == "lottery-pools"
    ev = cli("eval", str(run / "rounds" / "round_01" / "ticket.safetensors"))
    assert (
        ev.returncode == 0
        and f"test acc {100 * json.loads((run / 'rounds' / 'round_01' / 'meta.json').read_text())['test_acc']:.2f}%"
        in ev.stdout
    )
    again = cli(*args, "--tracking-uri", tracking_uri)  # the same files: the same run directory, nothing new
    assert again.returncode == 0 and len(list((tmp_path / "runs").iterdir())) == 1
    pool = cli("pool", str(run), "--method", "average", "--serial")
    assert pool.returncode == 0, pool.stdout + pool.stderr
    assert len(list((run / "pool" / "average").glob("target_*.json"))) == 3


# --- OpenLTH cifar_vgg_16 (layers.<k>.conv/bn, fc; four max-pools, then AvgPool2d(2)) --------------


class OpenLTHVGG16(nn.Module):
    PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

    class ConvModule(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in self.PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(OpenLTHVGG16.ConvModule(cin, v))
                cin = v
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(nn.AvgPool2d(2)(self.layers(x)).view(x.size(0), -1))


def test_openlth_levels_import_as_the_same_function(tmp_path):
    path, spec = job_yaml(tmp_path, "cifar_vgg16_avgpool")
    replicate = tmp_path / "lottery_abc" / "replicate_1"
    nets = []
    for level in range(2):
        main = replicate / f"level_{level}" / "main"
        main.mkdir(parents=True)
        torch.manual_seed(level)
        net = OpenLTHVGG16().eval()
        names = [n for n, _ in net.named_parameters() if n.endswith("conv.weight") or n == "fc.weight"]
        mask = {n: (torch.rand(dict(net.named_parameters())[n].shape) > 0.2 * level).int() for n in names}
        torch.save({k: v for k, v in mask.items()}, main / "mask.pth")
        torch.save(OpenLTHVGG16().state_dict(), main / "model_ep0_it0.pth")  # the level's start: not the ticket
        # saved as training left it: pruned weights not zero yet (OpenLTH zeroes them in forward)
        torch.save(net.state_dict(), main / "model_ep2_it0.pth")
        with torch.no_grad():
            for n, m in mask.items():
                dict(net.named_parameters())[n].mul_(m.float())
        nets.append(net)
    cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(tmp_path / "runs")})
    # OpenLTH pruned fc.weight here, which the job does not prune: refused, with the fix
    one_error_line(
        cli("import", str(replicate), "-f", "openlth", "--job", str(path), "--cluster", str(cluster)),
        "the source pruned classifier.weight, which this job does not prune (imp.prune_linear: true?)",
    )
    assert not (tmp_path / "runs").exists()
    spec["imp"]["prune_linear"] = True
    path = write_yaml(path, spec)
    proc = cli("import", str(replicate), "-f", "openlth", "--job", str(path), "--cluster", str(cluster))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = (tmp_path / "runs").glob("imported-cifar_vgg16_avgpool-import-*")
    job = job_from_dict(spec)
    data = load_data(job, RunDir(str(run)))
    for level, net in enumerate(nets):
        state, _ = decode_weights((run / "rounds" / f"round_{level:02d}" / "ticket.safetensors").read_bytes(), "t")
        model = build_model(job.model, 10, (3, 32, 32)).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            assert torch.allclose(model(data.test.x), net(data.test.x), atol=1e-4)
        meta = json.loads((run / "rounds" / f"round_{level:02d}" / "meta.json").read_text())
        assert meta["test_acc"] == accuracy(model, data.test, torch.arange(len(data.test)))


def test_import_refuses_what_it_cannot_read_safely_or_map(tmp_path):
    path, _ = job_yaml(tmp_path, "cifar_resnet18")
    cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(tmp_path / "runs")})
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"state_dict": {}, "hook": Exception("code")}, evil / "0model_SA_best.pth.tar")
    one_error_line(
        cli("import", str(evil), "-f", "lottery-pools", "--job", str(path), "--cluster", str(cluster)),
        "needs code to be unpickled, which lp-ray never does",
    )
    conv1d, _ = job_yaml(tmp_path, "conv1d")
    one_error_line(
        cli("import", str(evil), "-f", "lottery-pools", "--job", str(conv1d), "--cluster", str(cluster)),
        "lottery-pools tickets can be imported as cifar_resnet18, cifar_vgg16_avgpool",
    )
    paper_checkpoints(tmp_path / "paper", rounds=1)
    c100, _ = job_yaml(tmp_path, "cifar_resnet18", "cifar100")
    one_error_line(
        cli("import", str(tmp_path / "paper"), "-f", "lottery-pools", "--job", str(c100), "--cluster", str(cluster)),
        "lp-ray's cifar100 loader with",
    )
    one_error_line(cli("import", str(tmp_path / "none"), "-f", "openlth", "--job", str(path)), "no such folder")
    assert not (tmp_path / "runs").exists()
