from pathlib import Path

import heart_pipeline.contract as contract_module
from heart_pipeline.caching import code_digest, step_cache_key
from heart_pipeline.config import load_config


def test_key_ignores_the_output_folder_but_not_data_or_config() -> None:
    settings = load_config()
    base = {"data_fingerprint": "abc", "groups": settings.features, "out_dir": Path("/runs/1")}
    code = code_digest([contract_module])
    assert step_cache_key(base, code) == step_cache_key({**base, "out_dir": Path("/runs/2")}, code)
    assert step_cache_key(base, code) != step_cache_key({**base, "data_fingerprint": "abd"}, code)
    other_groups = settings.features.model_copy(update={"numeric": settings.features.numeric[:-1]})
    assert step_cache_key(base, code) != step_cache_key({**base, "groups": other_groups}, code)
    assert step_cache_key(base, code) != step_cache_key(base, code + "changed")
