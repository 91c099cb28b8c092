/*
 * run.c — a VM on a mount over a base: start (resume the base's snapshot there) and stop, the run
 * directory that records it (vm.env) so that later commands (migrate, stop) find the QEMU and the
 * mount, and resuming a VM from a device state on a mount, which the destination of a handoff
 * does too. Also where vm/'s errors become common's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handoff/handoff_int.h"
#include "vm/vm.h"

/* ---- errors of vm/ at the module edge ---------------------------------------------------------- */

static int from_vm(int rc)
{
	switch (rc) {
	case VM_OK: return HO_OK;
	case VM_EINVAL: return HO_EINVAL;
	case VM_ENOMEM: return HO_ENOMEM;
	case VM_ENOENT: return HO_ENOENT;
	case VM_ECONN: return HO_ECONN;
	case VM_ETIMEDOUT: return HO_ETIMEDOUT;
	case VM_EPROTO: case VM_EQMP: return HO_EPROTO;
	case VM_ESPAWN: case VM_EEXITED: case VM_EMIGRATE: return HO_ECHILD;
	case VM_ESTATE: return HO_ESTATE;
	case VM_ELIMIT: return HO_ELIMIT;
	default: return rc < 0 ? HO_EIO : rc;
	}
}

/* log what failed with vm/'s own words, return the ho_err */
int handoff_vm_fail(const char *what, int rc)
{
	ho_err("%s: %s", what, vm_strerror(rc));
	return from_vm(rc);
}

/* ---- run directories ---------------------------------------------------------------------------- */

void handoff_default_run_dir(const char *ovl, char *out, size_t len)
{
	size_t n = strlen(ovl);
	while (n > 1 && ovl[n - 1] == '/')
		n--;
	fmt(out, len, "%.*s.run", (int)n, ovl);
}

int handoff_write_vm_env(const char *run, const char *role, const char *base, const char *ovl,
			 const char *mnt, pid_t pid)
{
	char *buf = NULL, path[PATH_MAX], abs[3][PATH_MAX];
	size_t len = 0;
	const char *in[3] = { base, ovl, mnt };
	for (int i = 0; i < 3; i++)
		if (!realpath(in[i], abs[i]))
			fmt(abs[i], PATH_MAX, "%s", in[i]);
	handoff_env_put(&buf, &len, "VM_ROLE", "%s", role);
	handoff_env_put(&buf, &len, "VM_BASE", "%s", abs[0]);
	handoff_env_put(&buf, &len, "VM_OVERLAY", "%s", abs[1]);
	handoff_env_put(&buf, &len, "VM_MOUNT", "%s", abs[2]);
	handoff_env_put(&buf, &len, "VM_QEMU_PID", "%d", (int)pid);
	if (!buf)
		return HO_ENOMEM;
	fmt(path, sizeof(path), "%s/vm.env", run);
	int rc = ho_write_file_atomic(path, buf, len);
	free(buf);
	return rc;
}

/* start QEMU -incoming on MNT, load the device state, pass the gate (if any), cont; *out keeps
 * the handle */
int handoff_resume_on_mount(const struct base *b, const char *mnt, const char *run, const char *accel,
			    const char *devstate, struct vm **out, uint64_t *t_running, struct resume_gate *gate)
{
	struct vm_config cfg;
	char disk[PATH_MAX], mem[PATH_MAX];
	struct vm *vm = NULL;
	int rc;
	uint64_t t0 = ho_mono_ns(), t1, t2, t3;
	handoff_vm_config(b, mnt, run, accel, &cfg, disk, mem, sizeof(disk));
	if ((rc = vm_start_incoming(&cfg, &vm)))
		return handoff_vm_fail("cannot start qemu", rc);
	t1 = ho_mono_ns();
	vm_set_timeout(vm, 60000);
	if ((rc = vm_load_device_state(vm, devstate))) {
		rc = handoff_vm_fail("cannot load the device state", rc);
		goto fail;
	}
	t2 = ho_mono_ns();
	if (gate && (rc = gate->check(gate)))
		goto fail;
	t3 = ho_mono_ns();
	bool running = false;
	char st[64];
	if ((rc = vm_query_status(vm, st, sizeof(st), &running))) {
		rc = handoff_vm_fail("cannot query the VM", rc);
		goto fail;
	}
	if (!running && (rc = vm_cont(vm))) {
		rc = handoff_vm_fail("cannot resume the VM", rc);
		goto fail;
	}
	if ((rc = vm_query_status(vm, st, sizeof(st), &running)) || !running) {
		ho_err("the VM does not run after loading its state (status '%s')", rc ? "?" : st);
		rc = HO_ESTATE;
		goto fail;
	}
	if (t_running)
		*t_running = ho_now_ns();
	ho_notice("resume: qemu started in %.2f s, device state loaded in %.2f s, %s%.2f s, running after %.2f s",
		secs(t1 - t0), secs(t2 - t1), gate ? "images verified after " : "no check: ", secs(t3 - t2),
		secs(ho_mono_ns() - t3));
	*out = vm;
	return 0;
fail:
	vm_kill(vm);
	vm_close(vm);
	return rc;
}

enum handoff_outcome handoff_start(const struct handoff_start_opts *o)
{
	const char *base = o->base_dir, *ovl = o->overlay, *mnt = o->mount, *accel = o->accel, *run = o->run_dir;
	char rundef[PATH_MAX];
	int rc;
	if (!run) {
		handoff_default_run_dir(ovl, rundef, sizeof(rundef));
		run = rundef;
	}
	struct base b;
	if (handoff_base_load(base, &b))
		return HANDOFF_FAILED;
	if ((rc = ho_mkdir_p(run, 0755))) {
		handoff_env_free(&b.env);
		return HANDOFF_FAILED;
	}
	if ((rc = handoff_mount_base(base, ovl, mnt, NULL))) {
		handoff_env_free(&b.env);
		return HANDOFF_FAILED;
	}
	if ((rc = handoff_check_base(ovl, &b)))
		goto fail;
	struct vm *vm;
	uint64_t t0 = ho_mono_ns();
	if ((rc = handoff_resume_on_mount(&b, mnt, run, accel, b.devstate, &vm, NULL, NULL)))
		goto fail;
	if ((rc = handoff_write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm)))) {
		vm_kill(vm);
		vm_close(vm);
		goto fail;
	}
	ho_notice("VM resumed from base '%s' in %.1f s: qemu pid %d, run dir '%s', console '%s'", base,
		  secs(ho_mono_ns() - t0), (int)vm_pid(vm), run, vm_serial_log(vm));
	vm_close(vm);
	handoff_env_free(&b.env);
	return HANDOFF_OK;
fail:
	handoff_unmount(mnt, ovl);
	handoff_env_free(&b.env);
	return rc == HO_EBASE ? HANDOFF_BASE_MISMATCH : HANDOFF_FAILED;
}

enum handoff_outcome handoff_stop(const char *run)
{
	char path[PATH_MAX];
	struct env e;
	fmt(path, sizeof(path), "%s/vm.env", run);
	if (handoff_env_load(path, &e))
		return HANDOFF_FAILED;
	struct vm *vm;
	int rc = vm_attach(run, NULL, 5000, &vm);
	if (!rc) {
		vm_quit(vm);
		vm_close(vm);
	}
	const char *mnt = handoff_env_get(&e, "VM_MOUNT"), *ovl = handoff_env_get(&e, "VM_OVERLAY");
	int urc = mnt ? handoff_unmount(mnt, ovl) : 0;
	handoff_env_free(&e);
	return urc ? HANDOFF_FAILED : HANDOFF_OK;
}

