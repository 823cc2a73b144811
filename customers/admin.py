"""The staff's view of customers and access.

Every action loops over the selected rows and calls a service; edits made
through a change form are attributed to the staff member (``acting_as``),
so the audit trail and the tier files follow either way.
"""
from __future__ import annotations

import secrets as stdlib_secrets

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import services
from .admin_input import StrictIdsMixin
from .audit import Actor, acting_as
from .models import AuditEvent, BillingEvent, Credential, Customer, Tier, TierFileStatus

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


def render_secret_page(request, admin_site, issued: services.IssuedCredential, title: str):
    credential = issued.credential
    context = {
        **admin_site.each_context(request),
        "title": title,
        "credential": credential,
        "customer": credential.customer,
        "secret": issued.secret,
        "registry_host": settings.REGISTRY_HOST,
        "opts": Customer._meta,
    }
    response = TemplateResponse(request, "admin/customers/credential_secret.html", context)
    response["Cache-Control"] = "no-store"
    return response


class IssueCredentialForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)
    username = forms.CharField(
        required=False, max_length=150, help_text="Leave empty to derive one from the customer's email."
    )
    label = forms.CharField(required=False, max_length=100, help_text="e.g. “CI” or “laptop”.")
    expires_at = forms.DateTimeField(required=False, help_text="Optional, e.g. 2027-01-31 12:00.")


# --- Customers --------------------------------------------------------------------------


class CredentialInline(admin.TabularInline):
    model = Credential
    extra = 0
    can_delete = False
    fields = ("username", "label", "created_at", "rotated_at", "expires_at", "revoked_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # credentials are issued with "Issue credential", which shows the secret


@admin.register(Customer)
class CustomerAdmin(StrictIdsMixin, admin.ModelAdmin):
    list_display = ("name", "email", "tier", "status", "payment_status", "credential_count", "updated_at")
    list_filter = ("tier", "status", "payment_status", "needs_review")
    search_fields = ("name", "email", "credentials__username", "stripe_customer_id")
    list_select_related = ("tier",)
    inlines = [CredentialInline]
    actions = ["suspend_selected", "revoke_selected", "reactivate_selected"]
    readonly_fields = ("suspension_reason", "past_due_since", "last_billing_event_at", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "email", "tier", "status", "notes", "needs_review")}),
        (
            "Billing",
            {"fields": ("payment_status", "past_due_since", "stripe_customer_id", "last_billing_event_at")},
        ),
        ("History", {"fields": ("suspension_reason", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _credential_count=Count("credentials", filter=Q(credentials__revoked_at__isnull=True))
        )

    @admin.display(description="credentials", ordering="_credential_count")
    def credential_count(self, obj):
        return obj._credential_count

    def get_readonly_fields(self, request, obj=None):
        # Status changes go through the actions, which record why.
        return (*self.readonly_fields, "status") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        with acting_as(Actor.staff(request.user)):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with acting_as(Actor.staff(request.user)):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        actor = Actor.staff(request.user)
        for customer in queryset:
            services.delete_customer(customer, actor=actor)

    # Actions ------------------------------------------------------------------------

    def _apply(self, request, queryset, service, verb: str) -> None:
        actor = Actor.staff(request.user)
        for customer in queryset:
            service(customer, actor=actor)
        self.message_user(request, f"{verb} {len(queryset)} customer(s).", messages.SUCCESS)

    @admin.action(description="Suspend selected customers", permissions=["change"])
    def suspend_selected(self, request, queryset):
        self._apply(request, queryset, services.suspend, "Suspended")

    @admin.action(description="Reactivate selected customers", permissions=["change"])
    def reactivate_selected(self, request, queryset):
        self._apply(request, queryset, services.reactivate, "Reactivated")

    @admin.action(description="Revoke selected customers…", permissions=["change"])
    def revoke_selected(self, request, queryset):
        # Like Django's "delete selected": show who loses access, act on confirm.
        if request.POST.get("confirmed") == "yes":
            self._apply(request, queryset, services.revoke, "Revoked")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke access?",
            "customers": queryset.select_related("tier"),
            "action": "revoke_selected",
            "action_verb": "Revoke",
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/customers/confirm_action.html", context)

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
        if not self.has_change_permission(request, customer):
            raise PermissionDenied
        if request.method == "POST":
            form = IssueCredentialForm(request.POST)
            if form.is_valid():
                if not consume_secret_form_token(request, form.cleaned_data["token"]):
                    self.message_user(
                        request,
                        "This form was already submitted; the secret was shown once and is not stored.",
                        messages.WARNING,
                    )
                    return redirect("admin:customers_customer_change", customer.pk)
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
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/customers/issue_credential.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if self._valid_pk(object_id):  # a junk id in the URL gets the admin's "does not exist", not a 500
            extra_context = {
                **(extra_context or {}),
                "issue_credential_url": reverse("admin:customers_customer_issue_credential", args=[object_id]),
            }
        return super().change_view(request, object_id, form_url, extra_context)


# --- Credentials -------------------------------------------------------------------------


@admin.register(Credential)
class CredentialAdmin(StrictIdsMixin, admin.ModelAdmin):
    list_display = ("username", "customer", "tier", "label", "created_at", "expires_at", "revoked_at")
    list_filter = ("customer__tier", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("username", "customer__name", "customer__email")
    list_select_related = ("customer__tier",)
    readonly_fields = ("customer", "username", "created_at", "rotated_at", "revoked_at")
    fields = ("customer", "username", "label", "expires_at", "created_at", "rotated_at", "revoked_at")
    actions = ["revoke_selected_credentials"]

    @admin.display(ordering="customer__tier__slug")
    def tier(self, obj):
        return obj.customer.tier

    def has_add_permission(self, request):
        return False  # issue from the customer's page, which shows the secret once

    def save_model(self, request, obj, form, change):
        with acting_as(Actor.staff(request.user)):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with acting_as(Actor.staff(request.user)):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with acting_as(Actor.staff(request.user)):
            for credential in queryset:
                credential.delete()

    @admin.action(description="Revoke selected credentials", permissions=["change"])
    def revoke_selected_credentials(self, request, queryset):
        actor = Actor.staff(request.user)
        for credential in queryset:
            services.revoke_credential(credential, actor=actor)
        self.message_user(request, f"Revoked {len(queryset)} credential(s).", messages.SUCCESS)


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
        status = TierFileStatus.objects.filter(tier_slug=obj.slug).first()
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
    search_fields = ("stripe_event_id", "customer__email")
    exclude = ()


@admin.register(TierFileStatus)
class TierFileStatusAdmin(ReadOnlyAdmin):
    list_display = ("tier_slug", "last_written_at", "last_error_at", "last_error")
