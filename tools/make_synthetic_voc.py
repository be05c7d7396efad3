"""Write a small synthetic Pascal VOC (VOCdevkit/VOC2007 with JPEGs, XML and image sets) for demos and tests,
or its COCO twin (the same images and objects: train/, test/ and annotations/instances_{train,test}.json).
The same as `colt make-data voc` / `colt make-data coco`.

    python tools/make_synthetic_voc.py --out data/synthetic_voc --seed 0
    python tools/make_synthetic_voc.py --format coco --out data/synthetic_coco --seed 0
"""

from colt_det.commands import make_synthetic_command as main

if __name__ == "__main__":
    main()
