"""OpenLTH's CIFAR ResNets and an .npz data set, registered with lp-ray through entry points."""
