"""Evaluate detections: per-class AP on Pascal VOC (VOC07 11-point, VOC12 area, or COCO-style), or per-category
COCO AP of a COCO results file. The same command as `colt eval`.

    python tools/eval_det.py --voc-root DIR --year 2007 --image-set test --results DIR --metric voc07 --out FILE.json
    python tools/eval_det.py --voc-root DIR --checkpoint RUN/round_03/eval/model.pt [--run RUN] --metric voc12
    python tools/eval_det.py --coco-annotations instances_val2017.json --results detections.json --out FILE.json
"""

from colt_det.commands import eval_command as main

if __name__ == "__main__":
    main()
