"""What every run needs about itself: ``seeding``, ``devices`` and provenance (``manifest``).

The names are re-exported here, so ``from oncosynth.runtime import make_manifest`` keeps working.
"""

from oncosynth.runtime.devices import resolve_device
from oncosynth.runtime.manifest import hash_strings, make_manifest, package_versions
from oncosynth.runtime.seeding import seed_everything

__all__ = ["resolve_device", "hash_strings", "make_manifest", "package_versions", "seed_everything"]
