"""Refuse malformed ids in admin requests with 400, not 500.

Django's admin passes the selected ids of an action straight into
``pk__in``; a non-numeric or out-of-range id then fails inside the action,
as a 500. Staff never send such ids from the page, so they are a forged or
mangled request: a client error.
"""
from __future__ import annotations

from django.contrib.admin import helpers
from django.core.exceptions import BadRequest, ValidationError


class StrictIdsMixin:
    """For ModelAdmin classes: validate action selections and object ids
    with the primary key field (its type and its database range)."""

    def _valid_pk(self, value) -> bool:
        field = self.model._meta.pk
        try:
            field.run_validators(field.to_python(value))
        except (ValidationError, ValueError, TypeError, OverflowError):
            return False
        return True

    def response_action(self, request, queryset):
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(self._valid_pk(value) for value in selected):
            raise BadRequest("The selection holds an id that is not valid.")
        return super().response_action(request, queryset)

    def get_object(self, request, object_id, from_field=None):
        # None makes the admin answer "does not exist" and redirect, as it
        # already does for a well-formed id that matches nothing.
        if from_field is None and not self._valid_pk(object_id):
            return None
        return super().get_object(request, object_id, from_field)
