"""COLT detection front end: Pascal VOC data, Faster R-CNN VGG16, training, VOC/COCO evaluation."""
