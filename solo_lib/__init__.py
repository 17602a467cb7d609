"""solo_lib: the tested library behind the SOLO instance-segmentation course.

Modules, in the order the course meets them: `config` and `paths`, `data`,
`targets`, `model` and `losses`, `module` (Lightning) and `cli`,
`postprocess`, `evaluation`, `viz` and `browser`.
"""

__version__ = "0.1.0"
