"""The pure file layer: no database, a temporary directory only."""
from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory
from unittest import mock

from customers import htpasswd, passwords

from .conftest import apache_verifies


class RenderTests(unittest.TestCase):
    def test_lines_are_sorted_username_colon_hash(self):
        text = htpasswd.render([("zed", "$2y$05$b"), ("amy", "$2y$05$a")])
        self.assertEqual(text, "amy:$2y$05$a\nzed:$2y$05$b\n")

    def test_header_lines_are_comments(self):
        text = htpasswd.render([("amy", "h")], header="two\nlines")
        self.assertEqual(text, "# two\n# lines\namy:h\n")

    def test_usernames_that_could_inject_a_line_are_refused(self):
        for bad in ["a:b", "a\nb", "a b", "#a", "", "a\tb", "-lead", "x" * 151, "a\rb"]:
            with self.subTest(username=bad), self.assertRaises(htpasswd.InvalidEntry):
                htpasswd.render([(bad, "$2y$05$abc")])

    def test_hashes_with_whitespace_or_colon_are_refused(self):
        for bad in ["", "ab:c", "ab c", "ab\nevil:$2y$", "ab\t"]:
            with self.subTest(password_hash=bad), self.assertRaises(htpasswd.InvalidEntry):
                htpasswd.render([("amy", bad)])

    def test_case_insensitive_duplicates_are_refused(self):
        with self.assertRaisesRegex(htpasswd.InvalidEntry, "duplicate"):
            htpasswd.render([("Amy", "h1"), ("amy", "h2")])


class ParseTests(unittest.TestCase):
    def test_skips_comments_and_blanks_and_reports_line_numbers(self):
        entries, errors = htpasswd.parse("# c\n\namy:h1\nnocolon\nbad user:h\nbob:h2\n")
        self.assertEqual([(e.lineno, e.username, e.password_hash) for e in entries], [(3, "amy", "h1"), (6, "bob", "h2")])
        self.assertEqual([e.lineno for e in errors], [4, 5])
        self.assertTrue(str(errors[0]).startswith("line 4: "))


class WriteAtomicTests(unittest.TestCase):
    def setUp(self):
        self._tmp = TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.path = self.dir / "pro.htpasswd"

    def tearDown(self):
        self._tmp.cleanup()

    def test_writes_content_with_mode(self):
        self.assertTrue(htpasswd.write_atomic(self.path, "amy:h\n", mode=0o640))
        self.assertEqual(self.path.read_text(), "amy:h\n")
        self.assertEqual(self.path.stat().st_mode & 0o777, 0o640)

    def test_unchanged_content_leaves_the_file_untouched(self):
        htpasswd.write_atomic(self.path, "amy:h\n")
        before = self.path.stat()
        self.assertFalse(htpasswd.write_atomic(self.path, "amy:h\n"))
        after = self.path.stat()
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns))

    def test_changed_content_replaces_the_inode(self):
        htpasswd.write_atomic(self.path, "amy:h\n")
        inode = self.path.stat().st_ino
        htpasswd.write_atomic(self.path, "bob:h\n")
        self.assertNotEqual(self.path.stat().st_ino, inode)
        self.assertEqual(self.path.read_text(), "bob:h\n")

    def test_mode_change_alone_rewrites(self):
        htpasswd.write_atomic(self.path, "amy:h\n", mode=0o600)
        self.assertTrue(htpasswd.write_atomic(self.path, "amy:h\n", mode=0o640))
        self.assertEqual(self.path.stat().st_mode & 0o777, 0o640)

    def test_failed_replace_keeps_old_file_and_leaves_no_temp_file(self):
        htpasswd.write_atomic(self.path, "amy:h\n")
        with mock.patch("customers.htpasswd.os.replace", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                htpasswd.write_atomic(self.path, "bob:h\n")
        self.assertEqual(self.path.read_text(), "amy:h\n")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["pro.htpasswd"])

    def test_failed_write_keeps_old_file_and_leaves_no_temp_file(self):
        htpasswd.write_atomic(self.path, "amy:h\n")
        with mock.patch("customers.htpasswd.os.fsync", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                htpasswd.write_atomic(self.path, "bob:h\n")
        self.assertEqual(self.path.read_text(), "amy:h\n")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["pro.htpasswd"])

    def test_unknown_group_is_refused_before_anything_is_written(self):
        with self.assertRaises(KeyError):
            htpasswd.write_atomic(self.path, "amy:h\n", group="no-such-group-here")
        self.assertFalse(self.path.exists())

    def test_group_is_applied(self):
        import grp

        group = grp.getgrgid(os.getgid()).gr_name
        htpasswd.write_atomic(self.path, "amy:h\n", group=group)
        self.assertEqual(self.path.stat().st_gid, os.getgid())


class DirectoryLockTests(unittest.TestCase):
    def test_a_second_process_waits_for_the_lock(self):
        with TemporaryDirectory() as tmp:
            directory = Path(tmp)
            with htpasswd.directory_lock(directory):
                # flock conflicts between open file descriptions, so a
                # second process must time out while we hold it.
                code = (
                    "import sys; from pathlib import Path; from customers import htpasswd\n"
                    "try:\n"
                    f"    with htpasswd.directory_lock(Path({tmp!r}), timeout=0.2): sys.exit(0)\n"
                    "except htpasswd.LockTimeout: sys.exit(3)\n"
                )
                held = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, timeout=30)
            self.assertEqual(held.returncode, 3)
            free = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, timeout=30)
            self.assertEqual(free.returncode, 0)


class PasswordTests(unittest.TestCase):
    def test_hash_is_2y_bcrypt_at_the_given_cost_and_apache_verifies_it(self):
        hashed = passwords.hash_secret("correct horse", rounds=5)
        self.assertTrue(hashed.startswith("$2y$05$"))
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.htpasswd"
            path.write_text(f"amy:{hashed}\n")
            self.assertTrue(apache_verifies(path, "amy", "correct horse"))
            self.assertFalse(apache_verifies(path, "amy", "wrong"))

    def test_secret_with_a_nul_is_refused(self):
        with self.assertRaisesRegex(passwords.PasswordError, "NUL"):
            passwords.hash_secret("ab\x00cd", rounds=4)

    def test_secret_over_72_bytes_is_refused(self):
        with self.assertRaisesRegex(passwords.PasswordError, "72 bytes"):
            passwords.hash_secret("é" * 37, rounds=4)  # 74 bytes, 37 characters

    def test_generated_secrets_have_at_least_128_bits(self):
        secret = passwords.generate_secret()
        self.assertGreaterEqual(len(secret) * 6, 128)  # URL-safe base64: 6 bits a character
        self.assertNotEqual(secret, passwords.generate_secret())

    def test_2b_hashes_are_stored_as_2y(self):
        original = passwords.hash_secret("pw", rounds=4).replace("$2y$", "$2b$", 1)
        stored, warning = passwords.normalize_hash(original)
        self.assertTrue(stored.startswith("$2y$"))
        self.assertIsNone(warning)
        self.assertTrue(passwords.verify("pw", stored))

    def test_legacy_hashes_are_accepted_with_a_warning(self):
        from passlib.hash import apr_md5_crypt, ldap_sha1, sha256_crypt, sha512_crypt

        for hashed in (apr_md5_crypt.hash("pw"), ldap_sha1.hash("pw"), sha256_crypt.hash("pw"), sha512_crypt.hash("pw")):
            with self.subTest(hashed=hashed[:6]):
                stored, warning = passwords.normalize_hash(hashed)
                self.assertEqual(stored, hashed)
                self.assertIn("bcrypt only", warning)

    def test_plain_text_and_garbage_are_refused(self):
        for bad in ["plaintext", "$2y$05$short", "$apr1$broken"]:
            with self.subTest(bad=bad), self.assertRaises(passwords.PasswordError):
                passwords.normalize_hash(bad)
