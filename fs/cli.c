/*
 * cli.c — the command-line contract the two mount tools share (handoff-mount and the
 * destination's handoff-mirror): their exit statuses, their image options and how those combine,
 * and opening an overlay with its tracker as the owner. Kept here once so the tools cannot drift.
 */
#include <string.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "fs/fs.h"

int fs_exit_code(int err)
{
	switch (err) {
	case 0: return FS_EXIT_OK;
	case HO_EBASE: case HO_ENOENT: return FS_EXIT_BASE;
	case HO_EBUSY: return FS_EXIT_BUSY;
	case HO_ECORRUPT: case HO_EDB: return FS_EXIT_CORRUPT;
	case HO_EINVAL: return FS_EXIT_USAGE;
	default: return FS_EXIT_IO;
	}
}

int fs_images_option(struct fs_images *im, const char *name, const char *value)
{
	if (strcmp(name, "disk") == 0) {
		im->disk = value;
	} else if (strcmp(name, "memory") == 0) {
		im->memory = value;
	} else if (strcmp(name, "memory-size") == 0) {
		if (ho_parse_size(value, &im->memory_size) || im->memory_size == 0) {
			ho_err("invalid memory size '%s'", value);
			return HO_EINVAL;
		}
	} else if (strcmp(name, "chunk-size") == 0) {
		if (ho_parse_size(value, &im->chunk_size) || im->chunk_size > (1u << 20)) {
			ho_err("invalid chunk size '%s'", value);
			return HO_EINVAL;
		}
	} else {
		return HO_EINVAL;
	}
	return 0;
}

int fs_images_bases(const struct fs_images *im, struct overlay_base_spec *bases,
		    const struct overlay_base_spec **out)
{
	if (im->memory && im->memory_size) {
		ho_err("--memory and --memory-size exclude each other");
		return HO_EINVAL;
	}
	*out = NULL;
	if (!im->disk && !im->memory && !im->memory_size)
		return 0;
	if (!im->disk || (!im->memory && !im->memory_size)) {
		ho_err("give --disk and one of --memory or --memory-size");
		return HO_EINVAL;
	}
	memset(bases, 0, OVERLAY_NIMAGES * sizeof(*bases));
	bases[OVERLAY_DISK].path = im->disk;
	bases[OVERLAY_MEMORY].path = im->memory;
	bases[OVERLAY_MEMORY].size = im->memory_size;
	*out = bases;
	return 0;
}

int fs_open_owned(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk_size,
		  struct overlay **ov, struct tracker **tr)
{
	int rc = overlay_open(dir, bases, chunk_size, OVERLAY_CREATE | OVERLAY_LOCK, ov);
	if (rc)
		return rc;
	uint64_t n[OVERLAY_NIMAGES] = { overlay_nchunks(*ov, 0), overlay_nchunks(*ov, 1) };
	rc = tracker_open(overlay_dir(*ov), OVERLAY_NIMAGES, n, TRACKER_CREATE, tr);
	if (rc) {
		ho_err("cannot open the chunk index of '%s': %s", dir, ho_strerror(rc));
		overlay_close(*ov);
		*ov = NULL;
	}
	return rc;
}
