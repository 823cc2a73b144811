from django.contrib import admin
from django.urls import path

from customers import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("webhooks/stripe/", views.stripe_webhook, name="stripe-webhook"),
]
