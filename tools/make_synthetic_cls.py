"""Write a small synthetic twin of CIFAR-10, CIFAR-100, TinyImageNet or ImageNet in the real on-disk format.
The same as `colt make-data DATASET`.

    python tools/make_synthetic_cls.py cifar10 --root data
    python tools/make_synthetic_cls.py tinyimagenet --root data --num-classes 10 --train-per-class 100

CIFAR lands in <root>/cifar-10-batches-py or <root>/cifar-100-python, TinyImageNet in
<root>/tiny-imagenet-200, ImageNet directly in <root> (train/<wnid>/, val/<wnid>/). An identical twin
already there is kept; a real dataset there is never overwritten.
"""

from colt_cls.commands import make_synthetic_command as main

if __name__ == "__main__":
    main()
