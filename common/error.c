/*
 * error.c — the project's one error vocabulary and its translations to and from errno, so that
 * every layer speaks the same language and only the edges (FUSE replies, exit codes) convert.
 */
#include <errno.h>
#include "common/common.h"

static const char *const messages[] = {
	[0]               = "success",
	[-HO_EIO]         = "input/output error",
	[-HO_ENOMEM]      = "out of memory",
	[-HO_EINVAL]      = "invalid argument",
	[-HO_ENOENT]      = "no such file or directory",
	[-HO_EEXIST]      = "already exists",
	[-HO_EBUSY]       = "in use",
	[-HO_ENOSPC]      = "no space left on device",
	[-HO_ECORRUPT]    = "corrupt on-disk state",
	[-HO_EBASE]       = "base image mismatch",
	[-HO_ETRUNC]      = "truncated input",
	[-HO_EAUTH]       = "authentication failed",
	[-HO_ECHECKSUM]   = "checksum mismatch",
	[-HO_EFORMAT]     = "malformed input",
	[-HO_EVERSION]    = "unsupported version",
	[-HO_ESEQ]        = "records out of sequence",
	[-HO_ESTALE]      = "stream does not follow the receiver's state",
	[-HO_ETRAILING]   = "trailing bytes after end of stream",
	[-HO_EDB]         = "database error",
	[-HO_EPROTO]      = "protocol error",
	[-HO_ECONN]       = "connection failed",
	[-HO_ELIMIT]      = "resource limit exceeded",
	[-HO_EDIGEST]     = "image digest mismatch",
	[-HO_ESTATE]      = "invalid state",
	[-HO_ETIMEDOUT]   = "timed out",
	[-HO_EPERM]       = "permission denied",
	[-HO_ECHILD]      = "child process failed",
};

const char *ho_strerror(int err)
{
	if (err > 0 || err < HO_ERR_MIN || !messages[-err])
		return "unknown error";
	return messages[-err];
}

int ho_from_errno(int e)
{
	switch (e) {
	case 0:             return HO_OK;
	case ENOMEM:        return HO_ENOMEM;
	case EINVAL:        return HO_EINVAL;
	case ENOENT:        return HO_ENOENT;
	case ENOTDIR:       return HO_ENOENT;
	case EEXIST:        return HO_EEXIST;
	case EBUSY:         return HO_EBUSY;
	case EWOULDBLOCK:   return HO_EBUSY;
	case ENOSPC:        return HO_ENOSPC;
	case EDQUOT:        return HO_ENOSPC;
	case EFBIG:         return HO_ELIMIT;
	case EACCES:        return HO_EPERM;
	case EPERM:         return HO_EPERM;
	case ECONNREFUSED:  return HO_ECONN;
	case ECONNRESET:    return HO_ECONN;
	case EPIPE:         return HO_ECONN;
	case ENOTCONN:      return HO_ECONN;
	case ETIMEDOUT:     return HO_ETIMEDOUT;
	default:            return HO_EIO;
	}
}

int ho_to_errno(int err)
{
	switch (err) {
	case HO_OK:       return 0;
	case HO_ENOMEM:   return ENOMEM;
	case HO_EINVAL:   return EINVAL;
	case HO_ENOENT:   return ENOENT;
	case HO_EEXIST:   return EEXIST;
	case HO_EBUSY:    return EBUSY;
	case HO_ENOSPC:   return ENOSPC;
	case HO_EPERM:    return EPERM;
	case HO_ELIMIT:   return EFBIG;
	case HO_ETIMEDOUT: return ETIMEDOUT;
	default:          return EIO;
	}
}
