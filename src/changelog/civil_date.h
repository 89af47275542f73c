/*
 * civil_date.h: proleptic Gregorian dates and day counts since 1970-01-01
 * (Howard Hinnant's days_from_civil and civil_from_days), shared by the
 * changelog's writer and readers and the sinks that convert its dates.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>

namespace pgsink
{

/* Days since 1970-01-01 of year y, month m (1-12), day d (1-31). */
int64_t days_from_civil(int64_t y, unsigned m, unsigned d);

/* The date of the day days after 1970-01-01 (any year, no bounds). */
void civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

} // namespace pgsink
