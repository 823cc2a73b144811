"""The admin site, with the staff dashboard on its index page.

Installed through ``RegistryAdminConfig`` (in INSTALLED_APPS instead of
``django.contrib.admin``), Django's documented way to replace the default
site: every ``@admin.register`` still goes to ``admin.site``.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class RegistryAdminSite(admin.AdminSite):
    site_header = "registry-admin"
    site_title = "registry-admin"
    index_title = "Dashboard"

    def index(self, request, extra_context=None):
        from . import dashboard  # models are not ready when the site is built

        context = dict(extra_context or {})
        # Staff who cannot see customers get the plain app list.
        if request.user.has_perm("customers.view_customer"):
            context["dashboard"] = dashboard.summary()
        return super().index(request, context)


class RegistryAdminConfig(AdminConfig):
    default_site = "customers.admin_site.RegistryAdminSite"
