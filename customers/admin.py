"""The staff's view of customers and access.

Every action loops over the selected rows and calls a service; edits made
through a change form are attributed to the staff member (``acting_as``),
so the audit trail and the tier files follow either way.
"""
from __future__ import annotations

import secrets as stdlib_secrets
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import billing, billing_history, dashboard, services
from . import permissions as perms
from .admin_input import StrictIdsMixin
from .audit import Actor, acting_as
from .models import AuditEvent, BillingEvent, Credential, Customer, Tier, TierFileStatus, usable_condition

# --- Show a secret once -----------------------------------------------------------------
#
# A generated secret is rendered in the response to the POST that created it
# and is stored nowhere. Each form that creates one carries a one-time token
# kept in the session; posting it again (a reload, a double click) performs
# nothing and shows nothing, instead of silently issuing a second secret.

SECRET_FORM_TOKENS = "registry_admin_secret_form_tokens"


def new_secret_form_token(request) -> str:
    token = stdlib_secrets.token_urlsafe(16)
    tokens = request.session.get(SECRET_FORM_TOKENS, [])[-20:]
    request.session[SECRET_FORM_TOKENS] = [*tokens, token]
    return token


def consume_secret_form_token(request, token: str | None) -> bool:
    tokens = request.session.get(SECRET_FORM_TOKENS, [])
    if not token or token not in tokens:
        return False
    tokens.remove(token)
    request.session[SECRET_FORM_TOKENS] = tokens
    return True


class IssueCredentialForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)
    username = forms.CharField(
        required=False, max_length=150, help_text="Leave empty to derive one from the customer's email."
    )
    label = forms.CharField(required=False, max_length=100, help_text="e.g. “CI” or “laptop”.")
    expires_at = forms.DateTimeField(required=False, help_text="Optional, e.g. 2027-01-31 12:00.")


OVERLAP_CHOICES = [
    ("", "No overlap: the old secret stops working now"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("3d", "3 days"),
    ("7d", "7 days"),
    ("until", "Until the time below"),
]
OVERLAP_DURATIONS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "3d": timedelta(days=3),
    "7d": timedelta(days=7),
}


class RotateCredentialForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)
    overlap = forms.ChoiceField(
        choices=OVERLAP_CHOICES,
        required=False,
        widget=forms.RadioSelect(attrs={"class": "radiolist"}),
        help_text=(
            "With an overlap the new secret gets a new username, and the old username and secret keep "
            "working until then (at most 7 days), so the customer's CI can switch without downtime."
        ),
    )
    old_works_until = forms.DateTimeField(
        required=False, label="Old secret works until", help_text="With “until”: e.g. 2027-01-31 12:00 (UTC)."
    )
    username = forms.CharField(
        required=False,
        max_length=150,
        label="New username",
        help_text="With an overlap. Empty: the old one plus -r2, -r3…",
    )
    expires_at = forms.DateTimeField(
        required=False, label="New credential expires at", help_text="With an overlap; optional."
    )

    def clean(self):
        data = super().clean()
        overlap = data.get("overlap") or ""
        now = timezone.now()
        if overlap == "until":
            until = data.get("old_works_until")
            if until is None:
                self.add_error("old_works_until", "Give the time until which the old secret keeps working.")
            elif not now < until <= now + services.MAX_ROTATION_OVERLAP:
                self.add_error("old_works_until", "Choose a time in the future, at most 7 days away.")
            data["overlap_until"] = until
        else:
            data["overlap_until"] = now + OVERLAP_DURATIONS[overlap] if overlap else None
        return data


def admin_form(form: forms.Form, fields: list[str]) -> admin.helpers.AdminForm:
    """Lay a plain form out like the admin's own change forms."""
    return admin.helpers.AdminForm(form, [(None, {"fields": fields})], prepopulated_fields={})


def render_secret_page(request, admin_site, issued: services.IssuedCredential, title: str, **extra):
    credential = issued.credential
    context = {
        **admin_site.each_context(request),
        "title": title,
        "credential": credential,
        "customer": credential.customer,
        "secret": issued.secret,
        "registry_host": settings.REGISTRY_HOST,
        "opts": Customer._meta,
        **extra,
    }
    response = TemplateResponse(request, "admin/customers/credential_secret.html", context)
    # Neither the browser nor a proxy may keep the page holding the secret.
    response["Cache-Control"] = "no-store"
    return response


# --- Customers --------------------------------------------------------------------------


class GracePeriodFilter(admin.SimpleListFilter):
    title = "grace period"
    parameter_name = "grace"

    def lookups(self, request, model_admin):
        days = settings.GRACE_PERIOD_DAYS
        return [
            ("lapsed", f"Lapsed: past due over {days} days"),
            ("in_grace", f"Past due, within {days} days"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "lapsed":
            return dashboard.lapsed(queryset)
        if self.value() == "in_grace":
            return dashboard.in_grace(queryset)
        return queryset


@admin.register(Customer)
class CustomerAdmin(StrictIdsMixin, admin.ModelAdmin):
    list_display = (
        "name", "email", "tier", "status", "payment_status", "grace", "credential_count", "updated_at",
    )
    list_filter = (GracePeriodFilter, "status", "payment_status", "tier", "needs_review")
    search_fields = ("name", "email", "credentials__username", "stripe_customer_id")
    list_select_related = ("tier",)
    actions = ["suspend_nonpayment_selected", "suspend_selected", "revoke_selected", "reactivate_selected"]
    readonly_fields = (
        "suspension_reason",
        "past_due_since",
        "last_billing_event_at",
        "created_at",
        "updated_at",
        "payment_history",
        "billing_access_changes",
    )
    fieldsets = (
        (None, {"fields": ("name", "email", "tier", "status", "notes", "needs_review")}),
        (
            "Billing",
            {"fields": ("payment_status", "past_due_since", "stripe_customer_id", "last_billing_event_at")},
        ),
        ("History", {"fields": ("suspension_reason", "created_at", "updated_at")}),
        ("Payment history", {"fields": ("payment_history", "billing_access_changes")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _credential_count=Count("credentials", filter=Q(credentials__revoked_at__isnull=True))
        )

    @admin.display(description="credentials", ordering="_credential_count")
    def credential_count(self, obj):
        return obj._credential_count

    @admin.display(description="Stripe events")
    def payment_history(self, obj):
        return billing_history.payment_history(obj)

    @admin.display(description="What billing did to access")
    def billing_access_changes(self, obj):
        return billing_history.billing_access_changes(obj)

    @admin.display(description="grace period", ordering="past_due_since")
    def grace(self, obj):
        return dashboard.describe_grace(dashboard.grace_remaining(obj)) or "—"

    def get_readonly_fields(self, request, obj=None):
        # Status changes go through the actions, which check their own
        # permission and record why.
        return (*self.readonly_fields, "status") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        with acting_as(Actor.staff(request.user)):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with acting_as(Actor.staff(request.user)):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        actor = Actor.staff(request.user)
        with transaction.atomic():  # one rewrite per tier, however many are deleted
            for customer in queryset:
                services.delete_customer(customer, actor=actor)

    # Permissions ------------------------------------------------------------------------
    # Django offers an action only to users for whom its has_<name>_permission
    # is true, and refuses a posted action that is not offered.

    def has_suspend_permission(self, request):
        return request.user.has_perm(perms.SUSPEND_CUSTOMER)

    def has_revoke_permission(self, request):
        return request.user.has_perm(perms.REVOKE_CUSTOMER)

    def has_reactivate_permission(self, request):
        return request.user.has_perm(perms.REACTIVATE_CUSTOMER)

    def has_rotate_permission(self, request):
        return request.user.has_perm(perms.ROTATE_CREDENTIAL)

    # Actions ------------------------------------------------------------------------

    def _apply(self, request, queryset, service, verb: str) -> None:
        selected = list(queryset.select_related("tier"))
        changed = services.change_status_of_many(selected, service, actor=Actor.staff(request.user))
        unchanged = len(selected) - len(changed)
        note = f" ({unchanged} already were)" if unchanged else ""
        self.message_user(request, f"{verb} {len(changed)} customer(s){note}.", messages.SUCCESS)

    def _confirm(self, request, queryset, action: str, verb: str, consequence: str):
        """Like Django's "delete selected": show who loses access, act only
        when the form is posted back with ``confirmed=yes``."""
        customers = list(
            queryset.select_related("tier").annotate(
                usable_credentials=Count("credentials", filter=usable_condition(prefix="credentials__"))
            )
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {len(customers)} customer(s)?",
            "losing_access": [c for c in customers if c.is_entitled],
            "without_access": [c for c in customers if not c.is_entitled],
            "customers": customers,
            "action": action,
            "action_verb": verb,
            "consequence": consequence,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/customers/confirm_action.html", context)

    def _confirm_then_apply(self, request, queryset, service, verb: str, done: str, consequence: str):
        if request.POST.get("confirmed") == "yes":
            return self._apply(request, queryset, service, done)
        return self._confirm(request, queryset, request.POST.get("action", ""), verb, consequence)

    @admin.action(description="Suspend selected customers…", permissions=["suspend"])
    def suspend_selected(self, request, queryset):
        return self._confirm_then_apply(
            request, queryset, services.suspend, "Suspend", "Suspended",
            "They lose access on their next request. They are suspended by staff, so a payment does not "
            "reinstate them: only staff can reactivate them.",
        )

    @admin.action(description="Suspend selected customers for non-payment…", permissions=["suspend"])
    def suspend_nonpayment_selected(self, request, queryset):
        return self._confirm_then_apply(
            request, queryset, services.suspend_for_nonpayment_by_staff, "Suspend", "Suspended",
            "They lose access on their next request. Their next payment (invoice.paid) reinstates them "
            "automatically, as suspend_lapsed would.",
        )

    @admin.action(description="Revoke selected customers…", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        return self._confirm_then_apply(
            request, queryset, services.revoke, "Revoke", "Revoked",
            "They lose access on their next request, and no billing event gives it back: only staff can "
            "reactivate a revoked customer.",
        )

    @admin.action(description="Reactivate selected customers", permissions=["reactivate"])
    def reactivate_selected(self, request, queryset):
        self._apply(request, queryset, services.reactivate, "Reactivated")

    # Issuing a credential --------------------------------------------------------------

    def get_urls(self):
        return [
            path(
                "<int:customer_id>/issue-credential/",
                self.admin_site.admin_view(self.issue_credential_view),
                name="customers_customer_issue_credential",
            ),
            *super().get_urls(),
        ]

    def issue_credential_view(self, request, customer_id: int):
        customer = get_object_or_404(Customer.objects.select_related("tier"), pk=customer_id)
        if not self.has_rotate_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = IssueCredentialForm(request.POST)
            if form.is_valid():
                if not consume_secret_form_token(request, form.cleaned_data["token"]):
                    return already_submitted(self, request, customer)
                try:
                    issued = services.issue_credential(
                        customer,
                        actor=Actor.staff(request.user),
                        username=form.cleaned_data["username"] or None,
                        label=form.cleaned_data["label"],
                        expires_at=form.cleaned_data["expires_at"],
                    )
                except ValidationError as exc:
                    form.add_error("username", exc)
                    form.data = form.data.copy()
                    form.data["token"] = new_secret_form_token(request)
                else:
                    return render_secret_page(request, self.admin_site, issued, "New credential")
        else:
            form = IssueCredentialForm(initial={"token": new_secret_form_token(request)})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Issue a credential to {customer.name}",
            "customer": customer,
            "form": form,
            "adminform": admin_form(form, ["token", "username", "label", "expires_at"]),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/customers/issue_credential.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        # A junk id in the URL gets the admin's "does not exist", not a 500.
        customer = Customer.objects.select_related("tier").filter(pk=object_id).first() if self._valid_pk(object_id) else None
        if customer is not None and self.has_view_or_change_permission(request, customer):
            # "Why can't they pull?": checked against the tier file on disk.
            extra_context["access"] = dashboard.access_report(customer)
            extra_context["can_rotate"] = self.has_rotate_permission(request)
            extra_context["can_revoke_credential"] = request.user.has_perm(perms.REVOKE_CREDENTIAL)
            if extra_context["can_rotate"]:
                extra_context["issue_credential_url"] = reverse(
                    "admin:customers_customer_issue_credential", args=[customer.pk]
                )
        return super().change_view(request, object_id, form_url, extra_context)


def already_submitted(model_admin, request, customer):
    # A reload or a second click re-posts the form: act on nothing and show
    # nothing, rather than issue or rotate a second time.
    model_admin.message_user(
        request,
        "This form was already submitted; the secret was shown once and is not stored.",
        messages.WARNING,
    )
    return redirect("admin:customers_customer_change", customer.pk)


# --- Credentials -------------------------------------------------------------------------


@admin.register(Credential)
class CredentialAdmin(StrictIdsMixin, admin.ModelAdmin):
    list_display = ("username", "customer", "tier", "label", "created_at", "expires_at", "revoked_at", "state")
    list_filter = (
        "customer__tier",
        ("revoked_at", admin.EmptyFieldListFilter),
        ("expires_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("username", "customer__name", "customer__email")
    list_select_related = ("customer__tier",)
    readonly_fields = ("customer", "username", "created_at", "rotated_at", "revoked_at")
    fields = ("customer", "username", "label", "expires_at", "created_at", "rotated_at", "revoked_at")
    actions = ["revoke_selected_credentials"]

    @admin.display(ordering="customer__tier__slug")
    def tier(self, obj):
        return obj.customer.tier

    @admin.display(description="state")
    def state(self, obj):
        if obj.revoked_at:
            return "revoked"
        if not obj.is_usable():
            return "expired"
        return "usable" if obj.customer.is_entitled else f"customer {obj.customer.status}"

    def has_add_permission(self, request):
        return False  # issue from the customer's page, which shows the secret once

    def has_rotate_permission(self, request):
        return request.user.has_perm(perms.ROTATE_CREDENTIAL)

    def has_revoke_credential_permission(self, request):
        return request.user.has_perm(perms.REVOKE_CREDENTIAL)

    def save_model(self, request, obj, form, change):
        with acting_as(Actor.staff(request.user)):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with acting_as(Actor.staff(request.user)):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with acting_as(Actor.staff(request.user)), transaction.atomic():
            for credential in queryset:
                credential.delete()

    @admin.action(description="Revoke selected credentials", permissions=["revoke_credential"])
    def revoke_selected_credentials(self, request, queryset):
        actor = Actor.staff(request.user)
        with transaction.atomic():  # one write per tier file, whatever the selection
            for credential in queryset:
                services.revoke_credential(credential, actor=actor)
        self.message_user(request, f"Revoked {len(queryset)} credential(s).", messages.SUCCESS)

    def get_urls(self):
        return [
            path(
                "<int:credential_id>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="customers_credential_rotate",
            ),
            path(
                "<int:credential_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="customers_credential_revoke",
            ),
            *super().get_urls(),
        ]

    def rotate_view(self, request, credential_id: int):
        credential = get_object_or_404(Credential.objects.select_related("customer__tier"), pk=credential_id)
        if not self.has_rotate_permission(request):
            raise PermissionDenied
        customer = credential.customer
        if request.method == "POST":
            form = RotateCredentialForm(request.POST)
            if form.is_valid():
                if not consume_secret_form_token(request, form.cleaned_data["token"]):
                    return already_submitted(self, request, customer)
                actor = Actor.staff(request.user)
                until = form.cleaned_data["overlap_until"]
                try:
                    if until is None:
                        issued = services.rotate_credential(credential, actor=actor)
                    else:
                        issued = services.rotate_credential_with_overlap(
                            credential,
                            actor=actor,
                            old_works_until=until,
                            username=form.cleaned_data["username"] or None,
                            expires_at=form.cleaned_data["expires_at"],
                        )
                except ValidationError as exc:
                    form.add_error(None, exc)
                    form.data = form.data.copy()
                    form.data["token"] = new_secret_form_token(request)
                else:
                    return render_secret_page(
                        request, self.admin_site, issued, f"New secret for {customer.name}",
                        replaced=credential if until else None, old_works_until=until,
                    )
        else:
            form = RotateCredentialForm(initial={"token": new_secret_form_token(request), "overlap": ""})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the secret of {credential.username}",
            "credential": credential,
            "customer": customer,
            "form": form,
            "adminform": admin_form(form, ["token", "overlap", "old_works_until", "username", "expires_at"]),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/customers/rotate_credential.html", context)

    def revoke_view(self, request, credential_id: int):
        credential = get_object_or_404(Credential.objects.select_related("customer__tier"), pk=credential_id)
        if not self.has_revoke_credential_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            services.revoke_credential(credential, actor=Actor.staff(request.user))
            self.message_user(
                request, f"Revoked the credential {credential.username}; the customer keeps the others.",
                messages.SUCCESS,
            )
            return redirect("admin:customers_customer_change", credential.customer_id)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Revoke the credential {credential.username}?",
            "credential": credential,
            "customer": credential.customer,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/customers/revoke_credential.html", context)


# --- Tiers ---------------------------------------------------------------------------------


@admin.register(Tier)
class TierAdmin(StrictIdsMixin, admin.ModelAdmin):
    list_display = ("name", "slug", "position", "customer_count", "file_status")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("includes",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_customer_count=Count("customers"))

    @admin.display(description="customers", ordering="_customer_count")
    def customer_count(self, obj):
        return obj._customer_count

    @admin.display(description="tier file")
    def file_status(self, obj):
        status = TierFileStatus.objects.on_this_server().filter(tier_slug=obj.slug).first()
        if status and status.last_error:
            return format_html('<strong style="color:#ba2121">write failed: {}</strong>', status.last_error)
        if status and status.last_written_at:
            return f"written {timezone.localtime(status.last_written_at):%Y-%m-%d %H:%M:%S}"
        return "—"

    def get_readonly_fields(self, request, obj=None):
        # The slug names the file Apache is configured to read; renaming it
        # would leave the proxy pointing at a stale file.
        return ("slug",) if obj else ()

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields


# --- Read-only records -----------------------------------------------------------------------


class ReadOnlyAdmin(StrictIdsMixin, admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_kind", "actor_label", "action", "customer_label", "changes", "reason")
    list_filter = ("action", "actor_kind")
    search_fields = ("customer_label", "actor_label", "reason")
    date_hierarchy = "created_at"


@admin.register(BillingEvent)
class BillingEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "stripe_event_id", "type", "customer", "result", "note")
    list_filter = ("result", "type")
    search_fields = ("stripe_event_id", "customer__email", "customer__stripe_customer_id")
    list_select_related = ("customer",)
    exclude = ()
    actions = ["reprocess_failed"]

    def has_reprocess_permission(self, request) -> bool:
        return request.user.has_perm("customers.change_billingevent")

    @admin.action(description="Reprocess selected failed events", permissions=["reprocess"])
    def reprocess_failed(self, request, queryset):
        counts: dict[str, int] = {}
        for event in queryset.filter(result=BillingEvent.Result.FAILED):
            # Recorded as the event acting, with the staff member who asked.
            actor = Actor(AuditEvent.ActorKind.WEBHOOK, event.stripe_event_id, request.user, "reprocessed by staff")
            outcome = billing.reprocess(event, actor=actor)
            counts[outcome.result] = counts.get(outcome.result, 0) + 1
        summary = ", ".join(f"{n} {result}" for result, n in counts.items()) or "no failed events selected"
        level = messages.ERROR if counts.get(BillingEvent.Result.FAILED) else messages.SUCCESS
        self.message_user(request, f"Reprocessed: {summary}.", level)


@admin.register(TierFileStatus)
class TierFileStatusAdmin(ReadOnlyAdmin):
    list_display = ("tier_slug", "host", "last_written_at", "last_error_at", "last_error")
    list_filter = ("host",)
