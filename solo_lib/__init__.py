"""solo_lib: the tested library behind the SOLO instance-segmentation course.

Modules in the order of the pipeline:

- `config` (one `SOLOConfig`, two presets) and `paths`;
- `data`: the CIS 680 and COCO formats, the built-in synthetic set, the paired
  image geometry (`ImageGeometry`, the way to the input and back), batching;
- `targets`: grid cells, categories and mask targets per FPN level;
- `model` (ResNet-FPN, the SOLO head) and `losses` (focal, dice);
- `schedule`, `module` (the Lightning module) and `cli` (``python -m solo_lib``);
- `postprocess`: points NMS, candidates, maskness, Matrix NMS;
- `evaluation`: mask AP against the annotations as stored;
- `viz` and `browser`: pictures and the interactive result browser;
- `prediction` (COCO results files), `course` (the model the notebooks use), and the
  helpers `atomic`, `checkpointing`, `seeding`.
"""

__version__ = "0.1.0"
