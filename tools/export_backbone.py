"""Export a run's pruned weights: dense and sparse state_dicts, the ticket, a sparsity table, optionally ONNX.

    python tools/export_backbone.py RUN_DIR --out DIR [--round N | --final] [--source ticket|trained] [--onnx]

The same command as `colt export` (`colt_core.commands.export`). Detection runs export the VGG16 backbone keyed
like ``torchvision.models.vgg16().features`` (at width 1.0,
``torchvision.models.vgg16().features.load_state_dict(torch.load(DIR / "vgg16_backbone.pth"))`` works;
``vgg16_bn`` for ``model.norm: batch``); classifier runs export the model's own state_dict. Pruned weights are
exactly zero in both.
"""

from colt_core.commands.export import export_command as main

if __name__ == "__main__":
    main()
