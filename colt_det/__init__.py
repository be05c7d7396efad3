"""COLT detection front end: Pascal VOC and COCO-format data, the paper's Faster R-CNN VGG16 and torchvision's box
detectors, the detection task, VOC/COCO evaluation and exports."""
