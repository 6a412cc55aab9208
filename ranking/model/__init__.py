"""The PyTorch live-stream ranker, one block per file (PyG ``torch_geometric/nn`` layout):

- :mod:`.sequence` — :class:`LiveStreamTransformer` (BST over target / core / real-time / user tokens);
- :mod:`.target_attention` — :class:`TargetAttention` (DIN) and its :class:`Dice` activation;
- :mod:`.cross` — :class:`CrossNetMix` (DCN-V2, mixture of low-rank experts);
- :mod:`.mmoe` — :class:`MMoE` and :class:`SharedBottom` multi-task heads;
- :mod:`.biasnet` — :class:`BiasNet` (position-bias shallow tower, training only);
- :mod:`.ranker` — :class:`RankerConfig`, :class:`Ranker`, :class:`UncertaintyWeighting`,
  :func:`position_curve`.

Importing this package imports torch (the API's start-up path must not import it eagerly).
"""
from .biasnet import BiasNet
from .cross import CrossNetMix
from .mmoe import MMoE, SharedBottom
from .ranker import Ranker, RankerConfig, UncertaintyWeighting, position_curve
from .sequence import LiveStreamTransformer, PreLNEncoderLayer, time_buckets
from .target_attention import Dice, TargetAttention

__all__ = ["BiasNet", "CrossNetMix", "MMoE", "SharedBottom", "Ranker", "RankerConfig", "UncertaintyWeighting",
           "position_curve", "LiveStreamTransformer", "PreLNEncoderLayer", "time_buckets", "Dice",
           "TargetAttention"]
