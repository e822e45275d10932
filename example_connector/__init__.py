"""Example connector: a URLhaus-format CSV feed imported into OpenCTI in safe batches."""

__all__: list[str] = []
