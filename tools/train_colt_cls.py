"""Find a COLT (or LTH) ticket of an image classifier and report its accuracy, or train a given ticket.
The same as `colt train` with a classification config.

    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml [--set train.epochs=10] [--out DIR] \
        [--resume|--overwrite]
    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml \
        --ticket runs/tinyimagenet_resnet18/ticket.pt --out runs/tinyimagenet_to_cifar10
    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml --ticket runs/cifar10_resnet18/ticket.pt \
        --control random_prune --out runs/cifar10_resnet18_random_prune
    torchrun --standalone --nproc_per_node=K tools/train_colt_cls.py --cfg cifar10_resnet18.yaml  # K processes
"""

from colt_core.commands.train import make_train_command

main = make_train_command("classification")

if __name__ == "__main__":
    main()
