"""Custom permissions for the staff actions, and the two staff groups.

"support" can look at everything and suspend; "billing admin" can also
revoke, reactivate, issue and rotate credentials, and edit customers.
Superusers have every permission anyway.

The group contents are frozen here on purpose: later code changes must not
silently change what an existing deployment's groups may do.
"""
from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "customers.view_customer",
    "customers.view_credential",
    "customers.view_tier",
    "customers.view_auditevent",
    "customers.view_billingevent",
    "customers.view_tierfilestatus",
]
GROUPS = {
    "support": [*VIEW, "customers.suspend_customer"],
    "billing admin": [
        *VIEW,
        "customers.suspend_customer",
        "customers.revoke_customer",
        "customers.reactivate_customer",
        "customers.change_customer",
        "customers.rotate_credential",
        "customers.revoke_credential",
        "customers.change_credential",
    ],
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations (post_migrate);
    # create this app's now so the groups can refer to them.
    app_config = apps.get_app_config("customers")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps, using=schema_editor.connection.alias)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUPS.items():
        group, _ = Group.objects.using(schema_editor.connection.alias).get_or_create(name=name)
        codenames = [perm.split(".", 1)[1] for perm in perms]
        group.permissions.add(
            *Permission.objects.using(schema_editor.connection.alias).filter(
                content_type__app_label="customers", codename__in=codenames
            )
        )


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="credential",
            options={
                "ordering": ["username"],
                "permissions": [
                    ("rotate_credential", "Can issue and rotate credentials"),
                    ("revoke_credential", "Can revoke single credentials"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="customer",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("suspend_customer", "Can suspend customers"),
                    ("revoke_customer", "Can revoke customers"),
                    ("reactivate_customer", "Can reactivate customers"),
                ],
            },
        ),
        migrations.RunPython(create_groups, remove_groups),
    ]
