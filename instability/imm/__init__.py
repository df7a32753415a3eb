"""Instability mitigation methods (SPEC section 1), selected by the `imm/` config group."""

from instability.imm.base import Mitigation, Standard
from instability.imm.llrd import LLRD
from instability.imm.mixout import Mixout
from instability.imm.reinit import ReInit
from instability.imm.wd_pre import WDPre

__all__ = ["LLRD", "Mitigation", "Mixout", "ReInit", "Standard", "WDPre"]
