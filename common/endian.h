/* vmdiskfs - unaligned big/little-endian loads and stores for on-disk
 * structures.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_ENDIAN_H
#define VD_ENDIAN_H

#include <stdint.h>
#include <string.h>

static inline uint16_t load_be16 (const void *p)
{ uint16_t v; memcpy (&v, p, 2); return __builtin_bswap16 (v); }
static inline uint32_t load_be32 (const void *p)
{ uint32_t v; memcpy (&v, p, 4); return __builtin_bswap32 (v); }
static inline uint64_t load_be64 (const void *p)
{ uint64_t v; memcpy (&v, p, 8); return __builtin_bswap64 (v); }
static inline uint16_t load_le16 (const void *p)
{ uint16_t v; memcpy (&v, p, 2); return v; }
static inline uint32_t load_le32 (const void *p)
{ uint32_t v; memcpy (&v, p, 4); return v; }
static inline uint64_t load_le64 (const void *p)
{ uint64_t v; memcpy (&v, p, 8); return v; }
static inline void store_be16 (void *p, uint16_t v)
{ v = __builtin_bswap16 (v); memcpy (p, &v, 2); }
static inline void store_be32 (void *p, uint32_t v)
{ v = __builtin_bswap32 (v); memcpy (p, &v, 4); }
static inline void store_be64 (void *p, uint64_t v)
{ v = __builtin_bswap64 (v); memcpy (p, &v, 8); }
static inline void store_le32 (void *p, uint32_t v)
{ memcpy (p, &v, 4); }
static inline void store_le64 (void *p, uint64_t v)
{ memcpy (p, &v, 8); }

#endif
