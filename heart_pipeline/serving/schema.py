"""What the prediction API accepts and returns, built from the data contract and the codebook.

A field's type and bounds come from the contract, its title and each code's meaning from the codebook,
so the API rejects exactly what the data gate would quarantine, with a 422 that names the field.
"""

from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Body
from fastapi.openapi.models import Example
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from heart_pipeline.data_contract.codebook import Codebook
from heart_pipeline.data_contract.contract import Contract


def _code_not_bool_or_text(value: Any) -> Any:
    # JSON true is the integer 1 to Python, so Literal[0, 1] would take it; a code is a JSON number.
    if isinstance(value, bool | str):
        kind = {"kind": type(value).__name__}
        raise PydanticCustomError("code_type", "a code must be a JSON number, not {kind}", kind)
    return value


def field_text(column: str, contract: Contract, codebook: Codebook) -> tuple[str, str]:
    """A title and a description for a field: a code's meaning from the codebook, a bound's reason from the contract."""
    why = contract.why(column)
    if column in codebook.columns:
        coded = codebook.column(column)
        return coded.description, f"{coded.description}. Codes: {coded.describe()}."
    return why.split(". ")[0].rstrip(".") or column, why


def patient_model(contract: Contract, target: str, codebook: Codebook, example: dict[str, Any]) -> type[BaseModel]:
    """One pydantic model per patient record, built from the contract's bounds and value sets.

    Strict: a measurement must be a JSON number and a code one of the listed numbers; ``true`` or
    ``"1"`` is a 422, never silently read as 1.
    """
    fields: dict[str, Any] = {}
    for column in contract.columns:
        if column == target:
            continue
        values = contract.value_set(column)
        bounds = contract.bounds(column)
        title, description = field_text(column, contract, codebook)
        if values is not None:
            fields[column] = (
                Annotated[Literal[tuple(values)], BeforeValidator(_code_not_bool_or_text)],
                Field(title=title, description=description),
            )
        elif bounds is not None:
            low, high = bounds
            fields[column] = (
                float,
                Field(ge=low, le=high, allow_inf_nan=False, title=title, description=description),
            )
        else:
            fields[column] = (float, Field(allow_inf_nan=False, title=title, description=description))
    return create_model(
        "Patient",
        __config__=ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [example]}),
        **fields,
    )


class Prediction(BaseModel):
    probability: float = Field(description="Probability of heart disease")
    label: int = Field(description="1 = disease, at the model's decision threshold")


class PredictionResponse(BaseModel):
    registered_model: str
    model_version: str = Field(description="the version that scored these records (the last good champion)")
    threshold: float = Field(description="the model's decision threshold: label is probability >= threshold")
    predictions: list[Prediction]


def patients_body(patient: type[BaseModel], example: dict[str, Any], max_records: int) -> Any:
    """The request body of /predict and /preprocess: one record, or a list of 1 to ``max_records``."""
    return Annotated[
        patient | Annotated[list[patient], Field(min_length=1, max_length=max_records)],  # type: ignore[valid-type]
        Body(
            description=f"one patient record, or a list of 1 to {max_records}",
            openapi_examples={
                "one patient": Example(summary="one patient (the README's)", value=example),
                "two patients": Example(
                    summary="a list of records", value=[example, {**example, "age": 45, "sex": 0, "cp": 0}]
                ),
            },
        ),
    ]


def patients_frame(patients: list[BaseModel], columns: list[str]) -> pd.DataFrame:
    """Validated records as the frame the model scores, in the contract's column order."""
    return pd.DataFrame([p.model_dump() for p in patients], columns=columns).astype("float64")
