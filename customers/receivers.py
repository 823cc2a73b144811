"""Model signals, so that a plain ORM save or delete (``manage.py shell``,
the admin's change form) is audited and rewrites the tier files too.

The services schedule rebuilds themselves as well, because ``update()`` and
``bulk_create()`` send no signals; a tier scheduled twice in one
transaction is written once.
"""
from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from . import audit, sync
from .models import Credential, Customer, Tier


@receiver(pre_save, sender=Customer)
@receiver(pre_save, sender=Credential)
def read_stored_state(sender, instance, raw=False, **kwargs):
    # What this save replaces, read now: the instance may be stale (another
    # process moved the customer since it was loaded) or built by hand.
    stored = None
    if not raw and instance.pk is not None:
        stored = sender.objects.filter(pk=instance.pk).values(*instance.tracked_fields).first()
    instance._stored_state = stored


@receiver(post_save, sender=Customer)
def customer_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return  # loaddata: run sync_htpasswd afterwards
    before = instance.stored_state
    audit.record_customer_saved(instance, created, before)
    sync.customer_changed(instance, created, before)


@receiver(post_save, sender=Credential)
def credential_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    before = instance.stored_state
    audit.record_credential_saved(instance, created, before)
    sync.credential_changed(instance, before)


@receiver(pre_delete, sender=Customer)
def customer_deleting(sender, instance, **kwargs):
    audit.customer_deletion_started(instance)


@receiver(post_delete, sender=Customer)
def customer_deleted(sender, instance, **kwargs):
    audit.record_customer_deleted(instance)
    sync.schedule_rebuild(sync.tier_slugs(instance.tier_id).values())


@receiver(post_delete, sender=Credential)
def credential_deleted(sender, instance, **kwargs):
    audit.record_credential_deleted(instance)
    sync.credential_changed(instance)


@receiver(pre_save, sender=Tier)
def read_stored_slug(sender, instance, raw=False, **kwargs):
    # A slug renamed in the shell must empty the file under the old name.
    stored = None
    if not raw and instance.pk is not None:
        stored = sender.objects.filter(pk=instance.pk).values_list("slug", flat=True).first()
    instance._stored_slug = stored


@receiver(post_save, sender=Tier)
@receiver(post_delete, sender=Tier)
def tier_changed(sender, instance, raw=False, **kwargs):
    # A new tier gets its (empty) file at once, because Apache answers 500
    # for a configured file that does not exist; a deleted or renamed tier's
    # file is emptied rather than removed, for the same reason.
    if not raw:
        sync.schedule_rebuild([instance.slug, getattr(instance, "_stored_slug", None)])
