"""Find a COLT (or LTH) ticket of a detector (Faster R-CNN VGG16 or a torchvision family) on Pascal VOC or
COCO-format data and report per-class AP, or train a given ticket (or one of its controls).
The same as `colt train` with a detection config.

    python tools/train_colt_det.py --cfg voc_vgg16.yaml [--set train.epochs=10] [--out DIR] [--resume|--overwrite]
    python tools/train_colt_det.py --cfg voc_vgg16.yaml --ticket runs/voc_vgg16/ticket.pt --control random_prune \
        --out runs/voc_vgg16_random_prune
    torchrun --standalone --nproc_per_node=K tools/train_colt_det.py --cfg voc_vgg16.yaml   # K processes (GPUs)
"""

from colt_core.commands.train import make_train_command

main = make_train_command("detection")

if __name__ == "__main__":
    main()
