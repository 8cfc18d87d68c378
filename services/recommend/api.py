"""HTTP API: ``GET /v1/users/{user_id}/recommendations?k=10``.

Unknown users get the most popular items with ``popular_fallback: true``. Bad
parameters are a 422; before the catalogue is loaded the answer is 503.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from textpulse.contracts.recs import Recommendations

from .core import State

router = APIRouter(prefix="/v1", tags=["recommendations"])

UserId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[\x21-\x7E]+$", description="User id (printable ASCII).")
]


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    summary="Top-k unseen items for a user (popular items for an unknown user)",
)
async def recommendations(
    request: Request,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=1000, description="Number of items (at most the service's max_k).")] = 10,
) -> Recommendations:
    state: State | None = getattr(request.app.state, "recommend", None)
    if state is None or not len(state.catalogue):
        raise HTTPException(503, "catalogue not loaded yet", headers={"Retry-After": "5"})
    if k > state.settings.max_k:
        raise HTTPException(422, f"k must be ≤ {state.settings.max_k}")
    result, _ = state.recommend(user_id, k, "http")
    return result
