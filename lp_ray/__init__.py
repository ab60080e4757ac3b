"""lp-ray: Lottery Pools (Yin et al., AAAI 2023) on Ray: IMP with rewinding, then greedy ticket pooling."""

__version__ = "0.1.0"
